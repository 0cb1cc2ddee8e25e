/* A hostile child of a custom fork server (mode (c)), using the shipped header
 * aiosandbox.h: what one run could do to its siblings and to the fork server.
 *
 *   fork_neighbours    loops on sbx_wait_and_fork(); each child calls
 *                      sbx_sandbox_me_here() and serves string requests:
 *       "hold"         receive a string and keep it in `secret` (answers "holding")
 *       "alive"        answers "alive"
 *       "pid"          its pid as it sees it (int64)
 *       "probe"        for every pid from 1 to PROBE_PIDS and every one in /proc, but
 *                      its own: kill(pid, 0); pidfd_getfd() of its fd 1023 (its
 *                      comms); and a read of the same address as `secret` through
 *                      /proc/<pid>/mem and process_vm_readv (children of one fork
 *                      server share their layout).  Answers
 *                      "signal=P,P steal=P,P read=TEXT|TEXT".  (ptrace itself is
 *                      beyond any policy: the default policy kills it.)
 *       "killall"      kill(-1, SIGKILL); answers 0 or the errno (int64)
 *       "forkrace"     three threads fork up to FORKS times each (every grandchild
 *                      waits, holding fd 5, until SIGALRM ends it after 30 s) while
 *                      the main thread makes a forbidden syscall (socket)
 *       "abort"        abort()
 *       "exit N"       exit(N)
 *       ""             exit 0
 *
 * Everything is bounded: the probe tries a fixed set of pids, the race a fixed
 * number of forks, and every grandchild ends by itself.
 */
#define _GNU_SOURCE 1 /* process_vm_readv */
#include "aiosandbox.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/uio.h>

#define PROBE_PIDS 1024
#define FORKS 40

static char secret[128];

static void append(char *out, size_t size, const char *text) {
  size_t used = strlen(out);
  if (used + 1 < size) snprintf(out + used, size - used, "%s", text);
}

/* Tries one pid; appends what worked to the three lists. */
static void probe_one(int pid, char *signalled, char *stolen, char *read, size_t size) {
  char number[16], path[64], data[sizeof secret];
  snprintf(number, sizeof number, "%s%d", "", pid);
  if (kill(pid, 0) == 0) {
    append(signalled, size, signalled[0] ? "," : "");
    append(signalled, size, number);
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd >= 0) {
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, SBX_COMMS_FD, 0);
    if (fd >= 0) {
      append(stolen, size, stolen[0] ? "," : "");
      append(stolen, size, number);
      close(fd);
    }
    close(pidfd);
  }
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_RDONLY);
  if (fd >= 0) {
    memset(data, 0, sizeof data);
    if (pread(fd, data, sizeof data - 1, (off_t)(uintptr_t)secret) > 0 && data[0]) {
      append(read, size, read[0] ? "|" : "");
      append(read, size, data);
    }
    close(fd);
  }
  struct iovec local = {data, sizeof data - 1}, remote = {secret, sizeof data - 1};
  memset(data, 0, sizeof data);
  if (process_vm_readv(pid, &local, 1, &remote, 1, 0) > 0 && data[0]) {
    append(read, size, read[0] ? "|" : "");
    append(read, size, data);
  }
}

static int probe(void) {
  static char signalled[8192], stolen[8192], read[8192], answer[3 * 8192];
  static bool tried[PROBE_PIDS + 1];
  signalled[0] = stolen[0] = read[0] = '\0';
  memset(tried, 0, sizeof tried);
  for (int pid = 1; pid <= PROBE_PIDS; pid++) {
    if (pid == getpid()) continue;
    tried[pid] = true;
    probe_one(pid, signalled, stolen, read, sizeof signalled);
  }
  DIR *proc = opendir("/proc");
  for (struct dirent *entry; proc != NULL && (entry = readdir(proc)) != NULL;) {
    int pid = atoi(entry->d_name);
    if (pid <= 0 || pid == getpid() || (pid <= PROBE_PIDS && tried[pid])) continue;
    probe_one(pid, signalled, stolen, read, sizeof signalled);
  }
  if (proc != NULL) closedir(proc);
  snprintf(answer, sizeof answer, "signal=%s steal=%s read=%s", signalled, stolen, read);
  return sbx_send_string(answer);
}

static volatile int forked; /* grandchildren made so far, by all threads */

static void *forker(void *arg) {
  (void)arg;
  for (int i = 0; i < FORKS; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(30);
      for (;;) pause();
    }
    if (pid < 0) break;
    __atomic_add_fetch(&forked, 1, __ATOMIC_SEQ_CST);
  }
  return NULL;
}

static int forkrace(void) {
  pthread_t threads[3];
  for (int i = 0; i < 3; i++) {
    if (pthread_create(&threads[i], NULL, forker, NULL) != 0) return 30;
  }
  /* Once the forks are under way (or the threads are done): a bounded wait. */
  for (int spins = 0; spins < 100000 && __atomic_load_n(&forked, __ATOMIC_SEQ_CST) < 4; spins++) {
    sched_yield();
  }
  /* Forbidden: the run ends here as a violation, while the threads fork. */
  syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
  return 31;
}

static int serve(void) {
  for (;;) {
    char request[160];
    if (sbx_recv_string(request, sizeof request, NULL) != 0) return 20;
    int failed = 0;
    if (!strcmp(request, "")) return 0;
    if (!strcmp(request, "hold")) {
      failed = sbx_recv_string(secret, sizeof secret, NULL) || sbx_send_string("holding");
    } else if (!strcmp(request, "alive")) {
      failed = sbx_send_string("alive");
    } else if (!strcmp(request, "pid")) {
      failed = sbx_send_int64(getpid());
    } else if (!strcmp(request, "probe")) {
      failed = probe();
    } else if (!strcmp(request, "killall")) {
      int rc = kill(-1, SIGKILL);
      failed = sbx_send_int64(rc == 0 ? 0 : errno);
    } else if (!strcmp(request, "forkrace")) {
      return forkrace();
    } else if (!strcmp(request, "abort")) {
      abort();
    } else if (!strncmp(request, "exit ", 5)) {
      exit(atoi(request + 5));
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
      fprintf(stderr, "fork_neighbours: %s\n", sbx_last_error());
      return 14;
    }
  }
  if (sbx_sandbox_me_here() != 0) {
    fprintf(stderr, "fork_neighbours: %s\n", sbx_last_error());
    return 1;
  }
  return serve();
}
