/* The C ptrace tracer the monitor is measured against (`python3 -m benchmarks`, syscalls).
 *
 * argv: cont|info PROGRAM ARGS...: forks a child that waits until it is seized
 * (PTRACE_SEIZE with PTRACE_O_TRACESECCOMP and PTRACE_O_EXITKILL), loads a seccomp filter
 * that returns SECCOMP_RET_TRACE for getppid and allows everything else, and execs PROGRAM.
 * The tracer loops on waitpid and PTRACE_CONT ("info": it also reads each stop's syscall
 * with PTRACE_GET_SYSCALL_INFO, as a monitor that decides anything must).  The program's
 * output is its own: it times itself. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void load_filter(void) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
    perror("seccomp");
    _exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: tracer cont|info PROGRAM ARGS...\n");
    return 2;
  }
  int info = strcmp(argv[1], "info") == 0;
  int go[2];
  if (pipe(go)) {
    perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    char byte;
    close(go[1]);
    if (read(go[0], &byte, 1) != 1)
      _exit(1);
    load_filter();
    execv(argv[2], argv + 2);
    perror("execv");
    _exit(1);
  }
  close(go[0]);
  if (ptrace(PTRACE_SEIZE, child, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL)) {
    perror("PTRACE_SEIZE");
    return 1;
  }
  if (write(go[1], "g", 1) != 1)
    return 1;
  close(go[1]);
  long stops = 0;
  for (;;) {
    int status;
    if (waitpid(child, &status, __WALL) < 0) {
      perror("waitpid");
      return 1;
    }
    if (WIFEXITED(status) || WIFSIGNALED(status))
      break;
    int signal = 0;
    if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) {
      stops++;
      if (info) {
        struct __ptrace_syscall_info syscall_info;
        if (ptrace(PTRACE_GET_SYSCALL_INFO, child, sizeof syscall_info, &syscall_info) < 0 ||
            syscall_info.op != PTRACE_SYSCALL_INFO_SECCOMP ||
            syscall_info.seccomp.nr != SYS_getppid) {
          fprintf(stderr, "unexpected stop\n");
          return 1;
        }
      }
    } else if (status >> 16 == 0) {
      signal = WSTOPSIG(status);  // a signal for the child: deliver it
    }
    ptrace(PTRACE_CONT, child, 0, signal);
  }
  fprintf(stderr, "%ld seccomp stops\n", stops);
  return 0;
}
