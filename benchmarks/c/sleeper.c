/* One of a thousand sandboxees alive at once: sleeps until killed. */
#include <unistd.h>

int main(void) {
  for (;;) pause();
}
