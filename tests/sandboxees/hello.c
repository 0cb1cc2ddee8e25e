/* The smallest sandboxee: prints a greeting and exits 0. Built static by tests that need a
 * binary with no ELF interpreter and no shared libraries. */
#include <stdio.h>

int main(void) {
  puts("hello");
  return 0;
}
