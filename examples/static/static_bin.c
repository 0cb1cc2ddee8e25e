/* The sandboxee of the static example: reads its stdin, which the supervisor maps to an
 * fd it opened (here /proc/version), and writes it to stdout in upper case. */
#include <ctype.h>
#include <unistd.h>

int main(void) {
  char buf[4096];
  ssize_t n;
  while ((n = read(0, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) buf[i] = (char)toupper((unsigned char)buf[i]);
    if (write(1, buf, (size_t)n) != n) return 1;
  }
  return n < 0 ? 2 : 0;
}
