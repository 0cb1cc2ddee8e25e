/* The probe of tests/policy/test_evaluator_kernel.py: it asks the kernel, and reports what the kernel
 * answered, so that a test can hold the BPF evaluator against the real thing.
 *
 * All of stdin is read before anything is done, so a case that ends the process loses
 * nothing but the results after it. Numbers are little-endian.
 *
 * `probe`: run under a sandbox, it makes syscalls.
 *   stdin:  cases of 7 u64 each: the syscall number, then its 6 arguments.
 *   stdout: one i64 per case, written as soon as the call returns: the raw return value, or
 *           -errno when it failed.
 *
 * `probe load`: run without a sandbox, it asks seccomp(2) to load filters.
 *   stdin:  programs, each a u32 instruction count and that many `struct sock_filter`.
 *   stdout: one i32 per program: 0 if the kernel accepted it, else the errno it gave. Each
 *           program is loaded in a child of its own, which exits at once: a filter that loads
 *           never applies to anything.
 *
 * Exit status: 0 when done; 2 if stdin is malformed or too long; 3 if stdout fails; 4 if a
 * child cannot be made.
 *
 * Built static, so that its start-up needs only what allow_static_startup() allows. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned char input[1 << 20];

static size_t read_input(void) {
  size_t have = 0;
  for (;;) {
    ssize_t n = read(0, input + have, sizeof input - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(2);
    if (n == 0) return have;
    have += (size_t)n;
    if (have == sizeof input) _exit(2);
  }
}

static void write_all(const void *data, size_t size) {
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(1, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(3);
    p += n;
    size -= (size_t)n;
  }
}

static int syscalls(size_t have) {
  uint64_t c[7];
  if (have % sizeof c) return 2;
  for (size_t at = 0; at < have; at += sizeof c) {
    memcpy(c, input + at, sizeof c);
    /* The full 64-bit arguments reach the kernel: syscall(2) passes longs, and on the 64-bit
     * architectures aiosandbox supports a long is 64 bits. */
    long rc = syscall((long)c[0], (long)c[1], (long)c[2], (long)c[3], (long)c[4], (long)c[5],
                      (long)c[6]);
    int64_t result = rc == -1 ? -(int64_t)errno : (int64_t)rc;
    write_all(&result, sizeof result);
  }
  return 0;
}

/* 0 if the kernel accepts the filter, else its errno. A child that loaded the filter may then
 * die in any way (the filter decides about its exit_group too), so only a normal exit with a
 * non-zero status, made before anything was loaded, is a refusal. */
static int32_t try_load(struct sock_filter *filter, uint32_t count) {
  pid_t pid = fork();
  if (pid < 0) _exit(4);
  if (pid == 0) {
    struct sock_fprog prog = {.len = (unsigned short)count, .filter = filter};
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a filter that kills must not leave a core file */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(255);
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
    _exit(rc == 0 ? 0 : errno);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) _exit(4);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 0;
}

static int loads(size_t have) {
  static struct sock_filter filter[BPF_MAXINSNS + 1];
  size_t at = 0;
  while (at < have) {
    uint32_t count;
    if (have - at < sizeof count) return 2;
    memcpy(&count, input + at, sizeof count);
    at += sizeof count;
    if (count > BPF_MAXINSNS + 1 || have - at < count * sizeof filter[0]) return 2;
    memcpy(filter, input + at, count * sizeof filter[0]);
    at += count * sizeof filter[0];
    int32_t result = try_load(filter, count);
    write_all(&result, sizeof result);
  }
  return 0;
}

int main(int argc, char **argv) {
  size_t have = read_input();
  if (argc > 1 && !strcmp(argv[1], "load")) return loads(have);
  return syscalls(have);
}
