/* Red-team probes of a custom fork server's child (mode (c)), using aiosandbox.h.
 *
 *   red_forkc          loops on sbx_wait_and_fork(); each child calls
 *                      sbx_sandbox_me_here() and serves string requests:
 *       "fds"          its open fds, "N:type" comma-separated (no /proc needed)
 *       "file PATH"    the first 8 KiB of PATH, or "ERR errno"
 *       "readlink P"   readlink(P), or "ERR errno"
 *       "siginit"      sends its init (pid 1) every signal it can name, 32 and 33
 *                      (which sigfillset() leaves out of the init's blocked set)
 *                      first, then queues 2048 real-time signals on it; answers
 *                      how many sends the kernel accepted (int64)
 *       "orphan"       forks a grandchild that leaves the process group (setsid)
 *                      and waits (holding every inherited fd) until SIGALRM ends
 *                      it after 30 s; the child exits 0 at once
 *       ""             exit 0
 * Everything is bounded.
 */
#define _GNU_SOURCE 1
#include "aiosandbox.h"

#include <sys/stat.h>

static int list_fds(void) {
  static char out[16384];
  out[0] = '\0';
  for (int fd = 0; fd < 1024; fd++) {
    struct stat st;
    if (fcntl(fd, F_GETFD) < 0) continue;
    const char *kind = "?";
    if (fstat(fd, &st) == 0) {
      if (S_ISDIR(st.st_mode)) kind = "dir";
      else if (S_ISSOCK(st.st_mode)) kind = "sock";
      else if (S_ISFIFO(st.st_mode)) kind = "fifo";
      else if (S_ISREG(st.st_mode)) kind = "reg";
      else if (S_ISCHR(st.st_mode)) kind = "chr";
    }
    size_t used = strlen(out);
    snprintf(out + used, sizeof out - used, "%s%d:%s", used ? "," : "", fd, kind);
  }
  return sbx_send_string(out);
}

static int send_file(const char *path) {
  static char data[8192];
  char err[32];
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    snprintf(err, sizeof err, "ERR %d", errno);
    return sbx_send_string(err);
  }
  ssize_t n = read(fd, data, sizeof data - 1);
  int saved = errno;
  close(fd);
  if (n < 0) {
    snprintf(err, sizeof err, "ERR %d", saved);
    return sbx_send_string(err);
  }
  data[n] = '\0';
  return sbx_send_string(data);
}

static int send_link(const char *path) {
  char data[512];
  ssize_t n = readlink(path, data, sizeof data - 1);
  if (n < 0) snprintf(data, sizeof data, "ERR %d", errno);
  else data[n] = '\0';
  return sbx_send_string(data);
}

static int signal_init(void) {
  int64_t accepted = 0;
  for (int sig = 32; sig <= 33; sig++) accepted += kill(1, sig) == 0;
  for (int sig = 1; sig < 65; sig++) {
    if (sig == 32 || sig == 33) continue;
    accepted += kill(1, sig) == 0;
  }
  for (int i = 0; i < 2048; i++) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_code = SI_QUEUE;
    info.si_pid = getpid();
    info.si_uid = getuid();
    accepted += syscall(SYS_rt_sigqueueinfo, 1, 34 + i % 30, &info) == 0;
  }
  return sbx_send_int64(accepted);
}

static int serve(void) {
  for (;;) {
    char request[512];
    if (sbx_recv_string(request, sizeof request, NULL) != 0) return 20;
    int failed = 0;
    if (!strcmp(request, "")) return 0;
    if (!strcmp(request, "fds")) {
      failed = list_fds();
    } else if (!strncmp(request, "file ", 5)) {
      failed = send_file(request + 5);
    } else if (!strncmp(request, "readlink ", 9)) {
      failed = send_link(request + 9);
    } else if (!strcmp(request, "orphan")) {
      pid_t pid = fork();
      if (pid == 0) {
        setsid();
        alarm(30);
        for (;;) pause();
      }
      _exit(pid < 0 ? 23 : 0);
    } else if (!strcmp(request, "siginit")) {
      failed = signal_init();
    } else {
      return 21;
    }
    if (failed) return 22;
  }
}

int main(void) {
  for (;;) {
    int pid = sbx_wait_and_fork();
    if (pid == 0) break;
    if (pid < 0) {
      fprintf(stderr, "red_forkc: %s\n", sbx_last_error());
      return 14;
    }
  }
  if (sbx_sandbox_me_here() != 0) {
    fprintf(stderr, "red_forkc: %s\n", sbx_last_error());
    return 1;
  }
  return serve();
}
