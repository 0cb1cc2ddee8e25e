/* The sandboxee of tests/policy/test_helpers.py: `helpers MODE [ARGS]` makes the syscalls one
 * PolicyBuilder helper grants (or one just outside the grant), so a test can show that the
 * helper lets exactly those through.
 *
 * Syscalls are made with syscall(2), not libc wrappers, so that each mode makes the very
 * syscalls its name says (a wrapper may pick another one, e.g. open() is openat). Arguments
 * are harmless: bad fds, paths that do not exist, zero timeouts. Whether a call succeeds
 * rarely matters -- an allowed call runs, a forbidden one ends the run as a VIOLATION -- but
 * where a helper's grant decides a result (an errno from the policy, a registered rseq), the
 * mode checks it and exits with a code the test names: 0 for success, an errno value for a
 * failure worth reporting, 100+ for an unexpected state. Syscalls one architecture lacks
 * (open, stat, ... on aarch64) are skipped with #ifdef.
 *
 * Built static (and dynamic, with ASan and with gcov, for the runtime helpers). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/rseq.h>

#define NOPE "/nonexistent/helpers"
#define CALL(...) syscall(__VA_ARGS__)

static char page[4096] __attribute__((aligned(4096)));
static char buf[4096];
static const struct timespec zero_ts;

static long num(int argc, char **argv, int i) {
  return i < argc ? strtol(argv[i], NULL, 0) : 0;
}

static int fail(int code) { return code ? code : 100; }

/* --- files ------------------------------------------------------------------------- */

static int m_read(int argc, char **argv) {
  struct iovec iov = {buf, 1};
  CALL(SYS_read, 0, buf, 1);
  CALL(SYS_readv, 0, &iov, 1);
  CALL(SYS_preadv, 0, &iov, 1, 0, 0);
  CALL(SYS_pread64, 0, buf, 1, 0);
  return 0;
}

static int m_write(int argc, char **argv) {
  struct iovec iov = {"x", 1};
  CALL(SYS_write, 1, "x", 1);
  CALL(SYS_writev, 1, &iov, 1);
  CALL(SYS_pwritev, 1, &iov, 1, 0, 0);
  CALL(SYS_pwrite64, 1, "x", 1, 0);
  return 0;
}

static int m_open(int argc, char **argv) {
#ifdef SYS_creat
  CALL(SYS_creat, NOPE, 0600);
#endif
#ifdef SYS_open
  if (CALL(SYS_open, "/", O_RDONLY | O_DIRECTORY) < 0) return fail(errno);
#endif
  if (CALL(SYS_openat, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY) < 0) return fail(errno);
  return 0;
}

static int m_stat(int argc, char **argv) {
  struct stat st;
  struct statfs sfs;
  if (CALL(SYS_fstat, 0, &st) != 0) return fail(errno);
#ifdef SYS_stat
  CALL(SYS_stat, "/", &st);
  CALL(SYS_lstat, "/", &st);
#endif
#ifdef SYS_newfstatat
  if (CALL(SYS_newfstatat, AT_FDCWD, "/", &st, 0) != 0) return fail(errno);
#endif
  CALL(SYS_statfs, "/", &sfs);
  CALL(SYS_fstatfs, 0, &sfs);
  return 0;
}

static int m_access(int argc, char **argv) {
#ifdef SYS_access
  CALL(SYS_access, "/", F_OK);
#endif
  CALL(SYS_faccessat, AT_FDCWD, "/", F_OK);
  CALL(SYS_faccessat2, AT_FDCWD, "/", F_OK, 0);
  return 0;
}

static int m_dup(int argc, char **argv) {
  CALL(SYS_dup, 0);
#ifdef SYS_dup2
  CALL(SYS_dup2, 0, 100);
#endif
  CALL(SYS_dup3, 0, 101, 0);
  return 0;
}

static int m_pipe(int argc, char **argv) {
  int fds[2];
#ifdef SYS_pipe
  CALL(SYS_pipe, fds);
#endif
  return CALL(SYS_pipe2, fds, 0) == 0 ? 0 : fail(errno);
}

static int m_chmod(int argc, char **argv) {
#ifdef SYS_chmod
  CALL(SYS_chmod, NOPE, 0600);
#endif
  CALL(SYS_fchmod, -1, 0600);
  CALL(SYS_fchmodat, AT_FDCWD, NOPE, 0600);
  return 0;
}

static int m_chown(int argc, char **argv) {
#ifdef SYS_chown
  CALL(SYS_chown, NOPE, 0, 0);
  CALL(SYS_lchown, NOPE, 0, 0);
#endif
  CALL(SYS_fchown, -1, 0, 0);
  CALL(SYS_fchownat, AT_FDCWD, NOPE, 0, 0, 0);
  return 0;
}

static int m_readdir(int argc, char **argv) {
#ifdef SYS_getdents
  CALL(SYS_getdents, -1, buf, sizeof buf);
#endif
  CALL(SYS_getdents64, -1, buf, sizeof buf);
  return 0;
}

static int m_readlink(int argc, char **argv) {
  /* "/" is not a link: the kernel says EINVAL; static startup's fallback rule says ENOENT. */
#ifdef SYS_readlink
  if (CALL(SYS_readlink, "/", buf, sizeof buf) >= 0 || errno != EINVAL) return fail(errno);
#endif
  if (CALL(SYS_readlinkat, AT_FDCWD, "/", buf, sizeof buf) >= 0 || errno != EINVAL)
    return fail(errno);
  return 0;
}

static int m_link(int argc, char **argv) {
#ifdef SYS_link
  CALL(SYS_link, NOPE, NOPE "2");
#endif
  CALL(SYS_linkat, AT_FDCWD, NOPE, AT_FDCWD, NOPE "2", 0);
  return 0;
}

static int m_symlink(int argc, char **argv) {
#ifdef SYS_symlink
  CALL(SYS_symlink, "x", NOPE);
#endif
  CALL(SYS_symlinkat, "x", AT_FDCWD, NOPE);
  return 0;
}

static int m_mkdir(int argc, char **argv) {
#ifdef SYS_mkdir
  CALL(SYS_mkdir, NOPE, 0700);
#endif
  CALL(SYS_mkdirat, AT_FDCWD, NOPE, 0700);
  return 0;
}

static int m_utime(int argc, char **argv) {
#ifdef SYS_utime
  CALL(SYS_utime, NOPE, NULL);
  CALL(SYS_utimes, NOPE, NULL);
  CALL(SYS_futimesat, AT_FDCWD, NOPE, NULL);
#endif
  CALL(SYS_utimensat, AT_FDCWD, NOPE, NULL, 0);
  return 0;
}

static int m_unlink(int argc, char **argv) {
#ifdef SYS_unlink
  CALL(SYS_rmdir, NOPE);
  CALL(SYS_unlink, NOPE);
#endif
  CALL(SYS_unlinkat, AT_FDCWD, NOPE, 0);
  return 0;
}

static int m_rename(int argc, char **argv) {
#ifdef SYS_rename
  CALL(SYS_rename, NOPE, NOPE "2");
#endif
#ifdef SYS_renameat
  CALL(SYS_renameat, AT_FDCWD, NOPE, AT_FDCWD, NOPE "2");
#endif
  CALL(SYS_renameat2, AT_FDCWD, NOPE, AT_FDCWD, NOPE "2", 0);
  return 0;
}

static int m_fcntl(int argc, char **argv) {
  struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
  static const int cmds[] = {F_GETFD, F_GETFL, F_DUPFD, F_DUPFD_CLOEXEC};
  for (unsigned i = 0; i < sizeof cmds / sizeof cmds[0]; i++) CALL(SYS_fcntl, 0, cmds[i], 50);
  CALL(SYS_fcntl, 0, F_SETFD, 0);
  CALL(SYS_fcntl, 0, F_SETFL, 0);
  CALL(SYS_fcntl, 0, F_GETLK, &lock);
  CALL(SYS_fcntl, 0, F_SETLK, &lock);
  CALL(SYS_fcntl, -1, F_SETLKW, &lock);
  return 0;
}

/* cat PATH [EXPECTED]: the file's start must be EXPECTED */
static int m_cat(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, argv[2], O_RDONLY);
  if (fd < 0) return fail(errno);
  long n = CALL(SYS_read, fd, buf, sizeof buf - 1);
  if (n < 0) return fail(errno);
  if (argc > 3 && strncmp(buf, argv[3], strlen(argv[3])) != 0) return 101;
  return 0;
}

/* put PATH: create or truncate and write the file */
static int m_put(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return fail(errno);
  return CALL(SYS_write, fd, "data\n", 5) == 5 ? 0 : fail(errno);
}

/* ls DIR NAME: NAME must be an entry of DIR */
static int m_ls(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, argv[2], O_RDONLY | O_DIRECTORY);
  if (fd < 0) return fail(errno);
  long n;
  while ((n = CALL(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
    for (long at = 0; at < n;) {
      struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      } *entry = (void *)(buf + at);
      if (!strcmp(entry->name, argv[3])) return 0;
      at += entry->reclen;
    }
  }
  return n < 0 ? fail(errno) : ENOENT;
}

/* mkdir_at PATH: create a directory (the root is read-only unless set_root_writable) */
static int m_mkdir_at(int argc, char **argv) {
  return CALL(SYS_mkdirat, AT_FDCWD, argv[2], 0700) == 0 ? 0 : fail(errno);
}

/* map_exec PATH: map a file executable (refused on a noexec mount) */
static int m_map_exec(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, argv[2], O_RDONLY);
  if (fd < 0) return fail(errno);
  void *p = (void *)CALL(SYS_mmap, NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
  return p == MAP_FAILED ? fail(errno) : 0;
}

/* --- waiting, events, time --------------------------------------------------------- */

static int m_eventfd(int argc, char **argv) {
#ifdef SYS_eventfd
  CALL(SYS_eventfd, 0);
#endif
  return CALL(SYS_eventfd2, 0, 0) >= 0 ? 0 : fail(errno);
}

static int m_poll(int argc, char **argv) {
#ifdef SYS_poll
  CALL(SYS_poll, NULL, 0, 0);
#endif
  CALL(SYS_ppoll, NULL, 0, &zero_ts, NULL, 8);
  return 0;
}

static int m_select(int argc, char **argv) {
#ifdef SYS_select
  struct timeval tv = {0, 0};
  CALL(SYS_select, 0, NULL, NULL, NULL, &tv);
#endif
  CALL(SYS_pselect6, 0, NULL, NULL, NULL, &zero_ts, NULL);
  return 0;
}

static int m_epoll_wait(int argc, char **argv) {
  struct epoll_event ev;
#ifdef SYS_epoll_wait
  CALL(SYS_epoll_wait, -1, &ev, 1, 0);
#endif
  CALL(SYS_epoll_pwait, -1, &ev, 1, 0, NULL, 8);
  CALL(SYS_epoll_pwait2, -1, &ev, 1, &zero_ts, NULL, 8);
  return 0;
}

static int m_epoll(int argc, char **argv) {
  struct epoll_event ev = {.events = EPOLLIN};
#ifdef SYS_epoll_create
  CALL(SYS_epoll_create, 1);
#endif
  int fd = CALL(SYS_epoll_create1, 0);
  if (fd < 0) return fail(errno);
  if (CALL(SYS_epoll_ctl, fd, EPOLL_CTL_ADD, 0, &ev) != 0 && errno != EPERM) return fail(errno);
  CALL(SYS_epoll_pwait, fd, &ev, 1, 0, NULL, 8);
  return m_epoll_wait(argc, argv);
}

static int m_inotify(int argc, char **argv) {
#ifdef SYS_inotify_init
  CALL(SYS_inotify_init);
#endif
  CALL(SYS_inotify_init1, 0);
  CALL(SYS_inotify_add_watch, -1, "/", 0);
  CALL(SYS_inotify_rm_watch, -1, 1);
  CALL(SYS_close, -1);
  return 0;
}

static int m_alarm(int argc, char **argv) {
  struct itimerval off = {0};
#ifdef SYS_alarm
  CALL(SYS_alarm, 0);
#endif
  return CALL(SYS_setitimer, ITIMER_REAL, &off, NULL) == 0 ? 0 : fail(errno);
}

static int m_timers(int argc, char **argv) {
  struct sigevent sev = {.sigev_notify = SIGEV_NONE};
  struct itimerspec its = {{0, 0}, {100, 0}};
  int id;
  if (CALL(SYS_timer_create, CLOCK_MONOTONIC, &sev, &id) != 0) return fail(errno);
  CALL(SYS_timer_settime, id, 0, &its, NULL);
  CALL(SYS_timer_gettime, id, &its);
  CALL(SYS_timer_getoverrun, id);
  return CALL(SYS_timer_delete, id) == 0 ? 0 : fail(errno);
}

static int m_time(int argc, char **argv) {
  struct timeval tv;
  struct timespec ts;
#ifdef SYS_time
  CALL(SYS_time, NULL);
#endif
  CALL(SYS_gettimeofday, &tv, NULL);
  return CALL(SYS_clock_gettime, CLOCK_REALTIME, &ts) == 0 ? 0 : fail(errno);
}

static int m_sleep(int argc, char **argv) {
  CALL(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &zero_ts, NULL);
  return CALL(SYS_nanosleep, &zero_ts, NULL) == 0 ? 0 : fail(errno);
}

/* --- processes, signals, identity -------------------------------------------------- */

static int m_fork(int argc, char **argv) {
  /* Each child exits at once; init reaps them. */
#ifdef SYS_fork
  if (CALL(SYS_fork) == 0) CALL(SYS_exit_group, 0);
#endif
  if (vfork() == 0) _exit(0);
  long pid = CALL(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) CALL(SYS_exit_group, 0);
  return pid > 0 ? 0 : fail(errno);
}

/* clone_flags FLAGS: a fork with extra clone flags (namespace flags are never allowed) */
static int m_clone_flags(int argc, char **argv) {
  long pid = CALL(SYS_clone, SIGCHLD | num(argc, argv, 2), 0, 0, 0, 0);
  if (pid == 0) CALL(SYS_exit_group, 0);
  return pid > 0 ? 0 : fail(errno);
}

static int m_wait(int argc, char **argv) {
#ifdef SYS_waitpid
  CALL(SYS_waitpid, -1, NULL, WNOHANG);
#endif
  CALL(SYS_wait4, -1, NULL, WNOHANG, NULL);
  return errno == ECHILD ? 0 : fail(errno);
}

static volatile sig_atomic_t handled;
static void on_signal(int sig) { handled = sig; }

static int m_signals(int argc, char **argv) {
  static char altstack[1 << 16];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_ONSTACK};
  sigset_t set;
  if (sigaltstack(&ss, NULL) != 0) return fail(errno);
  if (sigaction(SIGUSR1, &sa, NULL) != 0) return fail(errno);
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(SIGUSR1); /* tgkill; the handler returns through rt_sigreturn */
  return handled == SIGUSR1 ? 0 : 101;
}

static int m_sigaction_usr1(int argc, char **argv) {
  struct sigaction sa = {.sa_handler = on_signal};
  return sigaction(SIGUSR1, &sa, NULL) == 0 ? 0 : fail(errno);
}

static int m_kill(int argc, char **argv) {
  long pid = CALL(SYS_getpid), tid = CALL(SYS_gettid);
  CALL(SYS_kill, pid, 0);
  CALL(SYS_tgkill, pid, tid, 0);
#ifdef SYS_tkill
  CALL(SYS_tkill, tid, 0);
#endif
  return 0;
}

/* kill_raw PID SIG */
static int m_kill_raw(int argc, char **argv) {
  return CALL(SYS_kill, num(argc, argv, 2), num(argc, argv, 3)) == 0 ? 0 : fail(errno);
}

static int m_ids(int argc, char **argv) {
  unsigned r, e, s;
  CALL(SYS_geteuid);
  CALL(SYS_getresuid, &r, &e, &s);
  CALL(SYS_getgid);
  CALL(SYS_getegid);
  CALL(SYS_getresgid, &r, &e, &s);
  CALL(SYS_getgroups, 0, NULL);
  return CALL(SYS_getuid) == 1000 ? 0 : 101;
}

static int m_pids(int argc, char **argv) {
  CALL(SYS_getppid);
  CALL(SYS_gettid);
  return CALL(SYS_getpid) == 2 ? 0 : 101; /* pid 1 is the sandbox's init */
}

static int m_pgids(int argc, char **argv) {
#ifdef SYS_getpgrp
  CALL(SYS_getpgrp);
#endif
  return CALL(SYS_getpgid, 0) > 0 ? 0 : fail(errno);
}

static int m_getrlimit(int argc, char **argv) {
  struct rlimit rl;
#ifdef SYS_getrlimit
  CALL(SYS_getrlimit, RLIMIT_NOFILE, &rl);
#endif
  return CALL(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 ? 0 : fail(errno);
}

static int m_setrlimit(int argc, char **argv) {
  struct rlimit none = {0, 0};
  CALL(SYS_setrlimit, RLIMIT_CORE, &none);
  return CALL(SYS_prlimit64, 0, RLIMIT_CORE, &none, NULL) == 0 ? 0 : fail(errno);
}

static int m_prlimit_set(int argc, char **argv) {
  struct rlimit none = {0, 0};
  return CALL(SYS_prlimit64, 0, RLIMIT_CORE, &none, NULL) == 0 ? 0 : fail(errno);
}

static int m_mlock(int argc, char **argv) {
  CALL(SYS_mlock, page, sizeof page);
  CALL(SYS_munlock, page, sizeof page);
  CALL(SYS_mlock2, page, sizeof page, 0);
  return 0;
}

/* --- argument-restricted helpers --------------------------------------------------- */

/* ioctl REQUEST: on stdin (/dev/null: ENOTTY) */
static int m_ioctl(int argc, char **argv) {
  CALL(SYS_ioctl, 0, num(argc, argv, 2), buf);
  return 0;
}

/* fcntl_cmd CMD */
static int m_fcntl_cmd(int argc, char **argv) {
  CALL(SYS_fcntl, 0, num(argc, argv, 2), 0);
  return 0;
}

/* getrandom FLAGS... */
static int m_getrandom(int argc, char **argv) {
  for (int i = 2; i < argc; i++)
    if (CALL(SYS_getrandom, buf, 16, num(argc, argv, i)) != 16) return fail(errno);
  return 0;
}

/* prctl OPTION [ARG2]: ARG3 is a page, ARG4 its size, ARG5 a name */
static int m_prctl(int argc, char **argv) {
  CALL(SYS_prctl, num(argc, argv, 2), num(argc, argv, 3), page, sizeof page, "helpers");
  return 0;
}

static int m_prctl_set_name(int argc, char **argv) {
  return CALL(SYS_prctl, PR_SET_NAME, "helpers", 0, 0, 0) == 0 ? 0 : fail(errno);
}

/* mmap PROT FLAGS [FD]: an anonymous (or fd) mapping of one page */
static int m_mmap(int argc, char **argv) {
  long fd = argc > 4 ? num(argc, argv, 4) : -1;
  void *p = (void *)CALL(SYS_mmap, NULL, 4096, num(argc, argv, 2), num(argc, argv, 3), fd, 0);
  return p == MAP_FAILED ? fail(errno) : 0;
}

/* mprotect PROT...: on a page of this binary's data, in turn */
static int m_mprotect(int argc, char **argv) {
  for (int i = 2; i < argc; i++)
    if (CALL(SYS_mprotect, page, sizeof page, num(argc, argv, i)) != 0) return fail(errno);
  return CALL(SYS_mprotect, page, sizeof page, PROT_READ | PROT_WRITE) == 0 ? 0 : fail(errno);
}

/* pkey_mprotect PROT...: as mprotect, without a protection key */
static int m_pkey_mprotect(int argc, char **argv) {
  for (int i = 2; i < argc; i++)
    if (CALL(SYS_pkey_mprotect, page, sizeof page, num(argc, argv, i), -1) != 0)
      return fail(errno);
  return 0;
}

/* futex OP...: operations that return at once (a WAIT whose value never matches) */
static int m_futex(int argc, char **argv) {
  static uint32_t word;
  for (int i = 2; i < argc; i++)
    CALL(SYS_futex, &word, num(argc, argv, i), 1, &zero_ts, &word, FUTEX_BITSET_MATCH_ANY);
  return 0;
}

/* madvise ADVICE...: on a fresh anonymous mapping (advice -1 probes for EINVAL) */
static int m_madvise(int argc, char **argv) {
  char *p = (void *)CALL(SYS_mmap, NULL, 4 * 4096, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return fail(errno);
  for (int i = 2; i < argc; i++) CALL(SYS_madvise, p, 4 * 4096, (int)num(argc, argv, i));
  return 0;
}

static int m_malloc(int argc, char **argv) {
  /* Big blocks are mmap'ed, grow with mremap and go back with munmap; small ones use brk. */
  char *big = malloc(1 << 20);
  if (!big) return 101;
  memset(big, 1, 1 << 20);
  big = realloc(big, 4 << 20);
  if (!big) return 102;
  free(big);
  char *small = malloc(100);
  if (!small) return 103;
  free(small);
  return 0;
}

static int m_shared_memory(int argc, char **argv) {
  struct stat st;
  /* MAP_SHARED of fd -1: the kernel says EBADF, but only after the filter let it run. */
  CALL(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, -1, 0);
  CALL(SYS_munmap, NULL, 0);
  CALL(SYS_close, -1);
  return CALL(SYS_fstat, 0, &st) == 0 ? 0 : fail(errno);
}

/* bpf CMD: with a zeroed attribute, so nothing is created */
static int m_bpf(int argc, char **argv) {
  static char attr[128];
  CALL(SYS_bpf, num(argc, argv, 2), attr, sizeof attr);
  return 0;
}

/* --- runtimes: rseq, allocators, logging -------------------------------------------- */

static int rseq_registered(void) {
  struct rseq *rs = (void *)((char *)__builtin_thread_pointer() + __rseq_offset);
  return __rseq_size > 0 && (int32_t)rs->cpu_id >= 0;
}

static int m_rseq(int argc, char **argv) {
  unsigned cpu, node;
  uint64_t mask;
  static uint32_t word;
  if (!rseq_registered()) return 110; /* glibc registers it at start-up when allowed */
  if (CALL(SYS_getcpu, &cpu, &node, NULL) != 0) return fail(errno);
  if (CALL(SYS_membarrier, 0 /* MEMBARRIER_CMD_QUERY */, 0, 0) < 0) return fail(errno);
  CALL(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, &zero_ts);
  CALL(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1);
  if (CALL(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
      (long)MAP_FAILED)
    return fail(errno);
  CALL(SYS_rt_sigprocmask, SIG_SETMASK, NULL, &mask, 8);
  CALL(SYS_ppoll, NULL, 0, &zero_ts, NULL, 8);
  /* What tcmalloc reads to size its per-CPU caches. */
  const char *files[] = {"/sys/devices/system/cpu/possible", "/proc/self/stat"};
  for (int i = 0; i < 2; i++) {
    int fd = CALL(SYS_openat, AT_FDCWD, files[i], O_RDONLY);
    if (fd < 0) return fail(errno);
    if (CALL(SYS_read, fd, buf, sizeof buf) <= 0) return fail(errno);
    CALL(SYS_close, fd);
  }
  CALL(SYS_prctl, PR_SET_VMA, PR_SET_VMA_ANON_NAME, page, sizeof page, "helpers");
  return 0;
}

static int m_affinity(int argc, char **argv) {
  cpu_set_t set;
  if (CALL(SYS_sched_getaffinity, 0, sizeof set, &set) < 0) return fail(errno);
  return CALL(SYS_sched_setaffinity, 0, sizeof set, &set) == 0 ? 0 : fail(errno);
}

static int m_tc_malloc(int argc, char **argv) {
  struct timespec ts;
  unsigned char vec[4];
  int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  char *region = (void *)CALL(SYS_mmap, NULL, 16 * 4096, PROT_NONE, anon | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) return fail(errno);
  CALL(SYS_mmap, region, 4096, PROT_NONE, anon | MAP_FIXED_NOREPLACE, -1, 0); /* EEXIST */
  CALL(SYS_mmap, NULL, 4096, PROT_NONE, anon, -1, 0);
  if (CALL(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, anon, -1, 0) == (long)MAP_FAILED)
    return fail(errno);
  if (CALL(SYS_mprotect, region, 4096, PROT_READ | PROT_WRITE) != 0) return fail(errno);
  region[0] = 1;
  CALL(SYS_madvise, region, 4096, MADV_DONTNEED);
  CALL(SYS_mincore, region, 4096, vec);
  CALL(SYS_mprotect, region, 4096, PROT_NONE);
  CALL(SYS_munmap, region + 8 * 4096, 4096);
  CALL(SYS_membarrier, 0, 0, 0);
  CALL(SYS_lseek, 0, 0, SEEK_CUR);
  CALL(SYS_nanosleep, &zero_ts, NULL);
  CALL(SYS_brk, 0);
  CALL(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
  CALL(SYS_getpid);
  CALL(SYS_prctl, PR_SET_VMA, PR_SET_VMA_ANON_NAME, region, 4096, "tcmalloc");
  /* tcmalloc's introspection may peek at memory; the policy says ENOSYS. */
  if (CALL(SYS_process_vm_readv, 0, NULL, 0, NULL, 0, 0) == 0 || errno != ENOSYS) return 111;
  return m_rseq(argc, argv);
}

static int m_scudo(int argc, char **argv) {
  struct timespec ts;
  static uint32_t word;
  int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  char *region = (void *)CALL(SYS_mmap, NULL, 16 * 4096, PROT_NONE, anon | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) return fail(errno);
  if (CALL(SYS_mmap, region, 4096, PROT_READ | PROT_WRITE, anon | MAP_FIXED, -1, 0) ==
      (long)MAP_FAILED)
    return fail(errno);
  region[0] = 1;
  CALL(SYS_madvise, region, 4096, MADV_DONTNEED);
  CALL(SYS_madvise, region, 4096, MADV_WIPEONFORK);
  CALL(SYS_munmap, region + 8 * 4096, 4096);
  if (CALL(SYS_getrandom, buf, 16, 0) != 16) return fail(errno);
  CALL(SYS_getpid);
  CALL(SYS_nanosleep, &zero_ts, NULL);
  CALL(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
  CALL(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1);
  /* Scudo looks for its options in files; the policy says they do not exist. */
  if (CALL(SYS_openat, AT_FDCWD, "/", O_RDONLY) >= 0 || errno != ENOENT) return 112;
  return 0;
}

static int m_log_forwarding(int argc, char **argv) {
  struct timespec ts;
  struct rlimit rl;
  uint64_t abrt = 1ULL << (SIGABRT - 1);
  CALL(SYS_write, 2, "log\n", 4);
  CALL(SYS_getpid);
  CALL(SYS_gettid);
  CALL(SYS_clock_gettime, CLOCK_REALTIME, &ts);
  CALL(SYS_close, -1);
  CALL(SYS_prlimit64, 0, RLIMIT_STACK, NULL, &rl);
  if (m_malloc(argc, argv) != 0) return 101;
  /* LOG(FATAL) aborts its own process group; blocked here, so the run goes on. */
  if (CALL(SYS_rt_sigprocmask, SIG_BLOCK, &abrt, NULL, 8) != 0) return fail(errno);
  return CALL(SYS_kill, 0, SIGABRT) == 0 ? 0 : fail(errno);
}

/* --- network ------------------------------------------------------------------------ */

/* socket FAMILY TYPE */
static int m_socket(int argc, char **argv) {
  return CALL(SYS_socket, num(argc, argv, 2), num(argc, argv, 3), 0) >= 0 ? 0 : fail(errno);
}

/* What the network proxy client does before and around a connect request. */
static int m_proxy_client(int argc, char **argv) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  struct msghdr msg = {0};
  static uint32_t word;
  int fd = CALL(SYS_socket, AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return fail(errno);
  if (CALL(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return fail(errno);
  len = sizeof domain;
  if (CALL(SYS_getsockopt, fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return fail(errno);
  if (type != SOCK_STREAM || domain != AF_INET6) return 101;
  long flags = CALL(SYS_fcntl, fd, F_GETFL);
  CALL(SYS_fcntl, fd, F_SETFL, flags);
  CALL(SYS_recvmsg, -1, &msg, 0);
  CALL(SYS_futex, &word, FUTEX_WAIT_BITSET_PRIVATE, 1, &zero_ts, NULL, FUTEX_BITSET_MATCH_ANY);
  CALL(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1);
  CALL(SYS_gettid);
  long copy = CALL(SYS_dup3, fd, 90, 0);
  CALL(SYS_close, copy);
  return CALL(SYS_close, fd) == 0 ? 0 : fail(errno);
}

/* getsockopt_opt OPTION: a SOL_SOCKET option of an AF_INET socket */
static int m_getsockopt(int argc, char **argv) {
  int value;
  socklen_t len = sizeof value;
  int fd = CALL(SYS_socket, AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fail(errno);
  CALL(SYS_getsockopt, fd, SOL_SOCKET, num(argc, argv, 2), &value, &len);
  return 0;
}

static volatile long trapped_syscall = -1;

static void on_sigsys(int sig, siginfo_t *info, void *context) {
  ucontext_t *uc = context;
  if (info->si_code != 1 /* SYS_SECCOMP */) return;
  trapped_syscall = info->si_syscall;
  /* What the proxy's handler does: put connect()'s result in the return register. */
#if defined(__x86_64__)
  uc->uc_mcontext.gregs[REG_RAX] = -ECONNREFUSED;
#elif defined(__aarch64__)
  uc->uc_mcontext.regs[0] = -ECONNREFUSED;
#endif
}

/* connect_trap: a connect() answered by a SIGSYS handler, as in the proxy's automatic mode */
static int m_connect_trap(int argc, char **argv) {
  struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(9)};
  sigset_t set;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (sigaction(SIGSYS, &sa, NULL) != 0) return fail(errno);
  sigemptyset(&set);
  sigaddset(&set, SIGSYS);
  if (sigprocmask(SIG_UNBLOCK, &set, NULL) != 0) return fail(errno);
  int fd = CALL(SYS_socket, AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fail(errno);
  long rc = CALL(SYS_connect, fd, &addr, sizeof addr);
  if (rc != -1 || errno != ECONNREFUSED) return 101;
  return trapped_syscall == SYS_connect ? 0 : 102;
}

/* connect_tcp PORT: to 127.0.0.1 (refused in a sandbox's own network namespace) */
static int m_connect_tcp(int argc, char **argv) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(num(argc, argv, 2))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = CALL(SYS_socket, AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fail(errno);
  return CALL(SYS_connect, fd, &addr, sizeof addr) == 0 ? 0 : fail(errno);
}

/* --- the sandbox around the sandboxee ----------------------------------------------- */

/* hostname NAME */
static int m_hostname(int argc, char **argv) {
  struct utsname u;
  if (CALL(SYS_uname, &u) != 0) return fail(errno);
  return strcmp(u.nodename, argv[2]) == 0 ? 0 : 101;
}

/* status_has TEXT: a line of /proc/self/status contains TEXT */
static int m_status_has(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY);
  if (fd < 0) return fail(errno);
  static char status[16384];
  long n = CALL(SYS_read, fd, status, sizeof status - 1);
  if (n <= 0) return fail(errno);
  return strstr(status, argv[2]) ? 0 : 101;
}

/* syscall NR [ARGS...]: the errno it fails with, or 0 */
static int m_syscall(int argc, char **argv) {
  long rc = CALL(num(argc, argv, 2), num(argc, argv, 3), num(argc, argv, 4), num(argc, argv, 5),
                 num(argc, argv, 6), num(argc, argv, 7), num(argc, argv, 8));
  return rc < 0 ? errno : 0;
}

static int m_exit(int argc, char **argv) {
  CALL(SYS_exit, 0); /* ends the only thread, so the process, with status 0 */
  return 101;
}

static int m_nothing(int argc, char **argv) { return 0; }

static const struct {
  const char *name;
  int (*run)(int, char **);
} modes[] = {
    {"nothing", m_nothing},
    {"exit", m_exit},
    {"read", m_read},
    {"write", m_write},
    {"open", m_open},
    {"stat", m_stat},
    {"access", m_access},
    {"dup", m_dup},
    {"pipe", m_pipe},
    {"chmod", m_chmod},
    {"chown", m_chown},
    {"readdir", m_readdir},
    {"readlink", m_readlink},
    {"link", m_link},
    {"symlink", m_symlink},
    {"mkdir", m_mkdir},
    {"utime", m_utime},
    {"unlink", m_unlink},
    {"rename", m_rename},
    {"fcntl", m_fcntl},
    {"cat", m_cat},
    {"put", m_put},
    {"ls", m_ls},
    {"mkdir_at", m_mkdir_at},
    {"map_exec", m_map_exec},
    {"eventfd", m_eventfd},
    {"poll", m_poll},
    {"select", m_select},
    {"epoll_wait", m_epoll_wait},
    {"epoll", m_epoll},
    {"inotify", m_inotify},
    {"alarm", m_alarm},
    {"timers", m_timers},
    {"time", m_time},
    {"sleep", m_sleep},
    {"fork", m_fork},
    {"clone_flags", m_clone_flags},
    {"wait", m_wait},
    {"signals", m_signals},
    {"sigaction_usr1", m_sigaction_usr1},
    {"kill", m_kill},
    {"kill_raw", m_kill_raw},
    {"ids", m_ids},
    {"pids", m_pids},
    {"pgids", m_pgids},
    {"getrlimit", m_getrlimit},
    {"setrlimit", m_setrlimit},
    {"prlimit_set", m_prlimit_set},
    {"mlock", m_mlock},
    {"ioctl", m_ioctl},
    {"fcntl_cmd", m_fcntl_cmd},
    {"getrandom", m_getrandom},
    {"prctl", m_prctl},
    {"prctl_set_name", m_prctl_set_name},
    {"mmap", m_mmap},
    {"mprotect", m_mprotect},
    {"pkey_mprotect", m_pkey_mprotect},
    {"futex", m_futex},
    {"madvise", m_madvise},
    {"malloc", m_malloc},
    {"shared_memory", m_shared_memory},
    {"bpf", m_bpf},
    {"rseq", m_rseq},
    {"affinity", m_affinity},
    {"tc_malloc", m_tc_malloc},
    {"scudo", m_scudo},
    {"log_forwarding", m_log_forwarding},
    {"socket", m_socket},
    {"proxy_client", m_proxy_client},
    {"getsockopt", m_getsockopt},
    {"connect_trap", m_connect_trap},
    {"connect_tcp", m_connect_tcp},
    {"hostname", m_hostname},
    {"status_has", m_status_has},
    {"syscall", m_syscall},
};

int main(int argc, char **argv) {
  if (argc >= 2)
    for (unsigned i = 0; i < sizeof modes / sizeof modes[0]; i++)
      if (!strcmp(argv[1], modes[i].name)) return modes[i].run(argc, argv);
  CALL(SYS_write, 2, "helpers: unknown mode\n", 22);
  return 64;
}
