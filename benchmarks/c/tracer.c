/* The C baseline of a syscall that reaches a ptrace tracer: forks a child that loads a
 * seccomp filter returning SECCOMP_RET_TRACE for getppid (RET_ALLOW otherwise) and execs
 * syscall_loop; the tracer PTRACE_SEIZEs it with PTRACE_O_TRACESECCOMP and answers every
 * stop with PTRACE_CONT, as small as a tracer gets.  The child's output is its timing.
 * argv: syscall_loop calls repeats */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) return 64;
  int go[2];
  if (pipe(go)) return 1;
  pid_t child = fork();
  if (child == 0) {
    char byte;
    close(go[1]);
    if (read(go[0], &byte, 1) != 1) _exit(1); /* traced from here on */
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program))
      _exit(1);
    execl(argv[1], argv[1], argv[2], argv[3], "ppid", (char *)NULL);
    _exit(127);
  }
  close(go[0]);
  if (ptrace(PTRACE_SEIZE, child, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL)) return 1;
  if (write(go[1], "g", 1) != 1) return 1;
  for (;;) {
    int status;
    if (waitpid(child, &status, __WALL) < 0) return 1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    int sig = (status >> 16) == 0 && WSTOPSIG(status) != SIGTRAP ? WSTOPSIG(status) : 0;
    ptrace(PTRACE_CONT, child, 0, sig);
  }
}
