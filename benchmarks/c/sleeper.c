/* One of the thousand sandboxees kept alive at once: sleeps until killed. */
#include <unistd.h>

int main(void) {
  for (;;)
    pause();
}
