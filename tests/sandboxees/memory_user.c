/* A sandboxee that uses a known amount of memory, for ru_maxrss.
 *
 *   memory_user main MIB     touch MIB MiB in the main process, exit 0
 *   memory_user child MIB    fork a child that touches MIB MiB; wait for it; exit 0
 *   memory_user sleep        sleep until killed
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void touch(long mib) {
  size_t size = (size_t)mib << 20;
  char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) _exit(2);
  memset(p, 1, size);
}

int main(int argc, char **argv) {
  if (argc < 2) return 64;
  if (!strcmp(argv[1], "main") && argc > 2) {
    touch(strtol(argv[2], NULL, 0));
    return 0;
  }
  if (!strcmp(argv[1], "child") && argc > 2) {
    pid_t pid = fork();
    if (pid < 0) return 3;
    if (pid == 0) {
      touch(strtol(argv[2], NULL, 0));
      _exit(0);
    }
    int status;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) ? WEXITSTATUS(status) : 4;
  }
  if (!strcmp(argv[1], "sleep")) {
    struct timespec ts = {100, 0};
    nanosleep(&ts, NULL);
    return 0;
  }
  return 64;
}
