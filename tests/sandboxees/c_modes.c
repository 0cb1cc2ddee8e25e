/* A C sandboxee for executor modes (b) and (c), using the shipped header aiosandbox.h.
 *
 *   c_modes echo          sandbox_me_here, then echo int64s over comms until 0 arrives
 *   c_modes open PATH     sandbox_me_here, then open PATH (a violation unless allowed)
 *   c_modes prepared PATH open PATH before sandboxing, read it after: send its bytes
 *   c_modes unsandboxed   exit 0 without ever calling sandbox_me_here
 *   c_modes threads       start a thread, then call sandbox_me_here (refused)
 *   c_modes buffer        receive a Buffer's fd, fill it with 'X', send its size
 *   c_modes fork-server   mode (c): loop on sbx_wait_and_fork(); each child notes
 *                         what it was given, calls sandbox_me_here and serves
 *                         string requests:
 *       "echo"      the echo protocol above, then exit 0
 *       "pid"       its pid (int64)
 *       "cwd"       its working directory (string)
 *       "state"     "leader=L blocked=B sigchld=default|other" (string): whether it
 *                   leads its session, how many signals it blocks
 *       "rlimits"   soft and hard RLIMIT_FSIZE, then RLIMIT_NOFILE (4 uint64)
 *       "read N"    up to 256 bytes read from fd N (bytes)
 *       "open"      open /etc/hostname (a violation unless allowed)
 *       ""          exit 0
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aiosandbox.h"

static void *idle(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

/* Receives int64s and answers each with value + 1 until 0 arrives. */
static int echo(void) {
  for (;;) {
    int64_t value;
    if (sbx_recv_int64(&value) != 0) return 2;
    if (value == 0) return 0;
    if (sbx_send_int64(value + 1) != 0) return 3;
  }
}

/* What a forked child was given, noted before its filter forbids asking. */
struct child_facts {
  int64_t pid;
  char cwd[256];
  char state[96];
  struct rlimit fsize, nofile;
};

static void note_facts(struct child_facts *facts) {
  sigset_t blocked;
  struct sigaction sigchld;
  int count = 0;
  facts->pid = getpid();
  if (getcwd(facts->cwd, sizeof facts->cwd) == NULL) strcpy(facts->cwd, "?");
  sigprocmask(SIG_BLOCK, NULL, &blocked);
  for (int sig = 1; sig < 65; sig++) count += sigismember(&blocked, sig) == 1;
  sigaction(SIGCHLD, NULL, &sigchld);
  snprintf(facts->state, sizeof facts->state, "leader=%d blocked=%d sigchld=%s",
           getsid(0) == getpid(), count, sigchld.sa_handler == SIG_DFL ? "default" : "other");
  getrlimit(RLIMIT_FSIZE, &facts->fsize);
  getrlimit(RLIMIT_NOFILE, &facts->nofile);
}

static int serve_child(const struct child_facts *facts) {
  for (;;) {
    char request[64];
    if (sbx_recv_string(request, sizeof request, NULL) != 0) return 20;
    if (!strcmp(request, "")) return 0;
    if (!strcmp(request, "echo")) return echo();
    int failed;
    if (!strcmp(request, "pid")) {
      failed = sbx_send_int64(facts->pid);
    } else if (!strcmp(request, "cwd")) {
      failed = sbx_send_string(facts->cwd);
    } else if (!strcmp(request, "state")) {
      failed = sbx_send_string(facts->state);
    } else if (!strcmp(request, "rlimits")) {
      failed = sbx_send_uint64(facts->fsize.rlim_cur) || sbx_send_uint64(facts->fsize.rlim_max) ||
               sbx_send_uint64(facts->nofile.rlim_cur) || sbx_send_uint64(facts->nofile.rlim_max);
    } else if (!strncmp(request, "read ", 5)) {
      char buf[256];
      ssize_t n = read(atoi(request + 5), buf, sizeof buf);
      failed = sbx_send_bytes(buf, n < 0 ? 0 : (size_t)n);
    } else if (!strcmp(request, "open")) {
      return open("/etc/hostname", O_RDONLY) < 0 ? 4 : 0;
    } else {
      return 21;
    }
    if (failed) return 22;
  }
}

/* Mode (c): SIGUSR1 stays blocked in the fork server, so a child that did
 * not clear its signal mask would show it. */
static int fork_server(void) {
  sigset_t usr1;
  struct child_facts facts;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, NULL);
  for (;;) {
    int pid = sbx_wait_and_fork();
    if (pid == 0) break;
    if (pid < 0) {
      fprintf(stderr, "c_modes: %s\n", sbx_last_error());
      return 14;
    }
  }
  note_facts(&facts);
  if (sbx_sandbox_me_here() != 0) {
    fprintf(stderr, "c_modes: %s\n", sbx_last_error());
    return 1;
  }
  return serve_child(&facts);
}

static int sandbox_me_here_or_die(void) {
  if (sbx_sandbox_me_here() != 0) {
    fprintf(stderr, "c_modes: %s\n", sbx_last_error());
    exit(1);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "echo")) {
    sandbox_me_here_or_die();
    return echo();
  }
  if (!strcmp(mode, "fork-server")) return fork_server();
  if (!strcmp(mode, "open") && argc > 2) {
    sandbox_me_here_or_die();
    return open(argv[2], O_RDONLY) < 0 ? 4 : 0;
  }
  if (!strcmp(mode, "prepared") && argc > 2) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return 5;
    sandbox_me_here_or_die();
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) return 6;
    return sbx_send_bytes(buf, (size_t)n) != 0 ? 7 : 0;
  }
  if (!strcmp(mode, "unsandboxed")) return 0;
  if (!strcmp(mode, "threads")) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, idle, NULL) != 0) return 8;
    if (sbx_sandbox_me_here() != 0) {
      fprintf(stderr, "c_modes: %s\n", sbx_last_error());
      return 9;
    }
    return 0;
  }
  if (!strcmp(mode, "buffer")) {
    sandbox_me_here_or_die();
    int fd;
    if (sbx_recv_fd(&fd) != 0) return 10;
    struct stat st;
    if (fstat(fd, &st) != 0) return 11;
    unsigned char *data = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED) return 12;
    memset(data, 'X', (size_t)st.st_size);
    return sbx_send_uint64((uint64_t)st.st_size) != 0 ? 13 : 0;
  }
  fprintf(stderr, "usage: c_modes echo|open PATH|prepared PATH|unsandboxed|threads|buffer|"
                  "fork-server\n");
  return 64;
}
