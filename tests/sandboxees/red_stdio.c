/* Hostile sandboxee for tests/sandbox/test_stdio_red.py (red team of the stdio supervisor).
 *
 *   seek OFF     lseek(1, OFF, SEEK_SET), then writes "x" to fd 1.
 *   say TEXT     writes TEXT to fd 1 after sleeping 200 ms (so two runs overlap).
 *   bytes N      writes N single bytes to fd 1, one write(2) each.
 *   write N      writes N bytes to fd 1 (64 KiB writes), then exits.
 *   cat          copies one read of fd 0 (up to 4 KiB) to fd 1.
 *   read N       reads exactly N bytes of fd 0 and copies them to fd 1.
 *   pipesz       shrinks the pipe on fd 1 to one page (F_SETPIPE_SZ), then writes "x".
 *   xcpu         raise(SIGXCPU) with no CPU limit involved.
 *   xcpu-spoof   queues itself a SIGXCPU whose si_code claims SI_KERNEL (allowed for
 *                a signal to oneself), catches it, then SIGKILLs itself.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void ignore(int sig) { (void)sig; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (!strcmp(argv[1], "seek") && argc == 3) {
    lseek(1, atoll(argv[2]), SEEK_SET);
    write(1, "x", 1);
    return 0;
  }
  if (!strcmp(argv[1], "say") && argc == 3) {
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    write(1, argv[2], strlen(argv[2]));
    return 0;
  }
  if (!strcmp(argv[1], "bytes") && argc == 3) {
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++)
      if (write(1, "b", 1) != 1) return 3;
    return 0;
  }
  if (!strcmp(argv[1], "write") && argc == 3) {
    static char chunk[64 << 10];
    long n = atol(argv[2]);
    memset(chunk, 'w', sizeof chunk);
    while (n > 0) {
      ssize_t done = write(1, chunk, n < (long)sizeof chunk ? (size_t)n : sizeof chunk);
      if (done <= 0) return 3;
      n -= done;
    }
    return 0;
  }
  if (!strcmp(argv[1], "cat")) {
    char buf[4096];
    ssize_t n = read(0, buf, sizeof buf);
    if (n > 0) write(1, buf, (size_t)n);
    return 0;
  }
  if (!strcmp(argv[1], "read") && argc == 3) {
    char buf[4096];
    long n = atol(argv[2]);
    if (n > (long)sizeof buf) return 2;
    long got = 0;
    while (got < n) {
      ssize_t r = read(0, buf + got, (size_t)(n - got));
      if (r <= 0) break;
      got += r;
    }
    write(1, buf, (size_t)got);
    return 0;
  }
  if (!strcmp(argv[1], "pipesz")) {
    fcntl(1, F_SETPIPE_SZ, 4096);
    write(1, "x", 1);
    return 0;
  }
  if (!strcmp(argv[1], "xcpu")) {
    raise(SIGXCPU);
    return 0;
  }
  if (!strcmp(argv[1], "xcpu-spoof")) {
    signal(SIGXCPU, ignore);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = SIGXCPU;
    info.si_code = 0x80; /* SI_KERNEL */
    syscall(SYS_rt_sigqueueinfo, getpid(), SIGXCPU, &info);
    syscall(SYS_kill, getpid(), SIGKILL);
    return 0;
  }
  return 2;
}
