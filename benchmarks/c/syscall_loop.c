/* Times N calls of one syscall (the raw syscall: glibc caches nothing) with the vDSO clock,
 * R times, and prints ns per call for each repeat.
 * argv: calls repeats ppid|pgid */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) return 64;
  long calls = atol(argv[1]);
  int repeats = atoi(argv[2]);
  long nr = strcmp(argv[3], "pgid") == 0 ? SYS_getpgid : SYS_getppid;
  for (int r = 0; r < repeats; r++) {
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < calls; i++) syscall(nr, 0);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%.2f\n", ns / calls);
  }
  return 0;
}
