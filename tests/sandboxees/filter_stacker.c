/* A hostile sandboxee that stacks seccomp filters of its own to fool the monitor.
 *
 *   filter_stacker [--me-here] HOW WHICH DATA [THEN]
 *
 * --me-here: first call sbx_sandbox_me_here() (an executor with sandbox_before_exec=False,
 *        mode (b)), so that the filter is stacked on the one the client loaded.
 * HOW:   "seccomp" (seccomp(2), SECCOMP_SET_MODE_FILTER), "tsync" (the same with
 *        SECCOMP_FILTER_FLAG_TSYNC) or "prctl" (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)).
 * WHICH: "all": the filter returns SECCOMP_RET_TRACE|DATA for every syscall;
 *        "socket": only for socket(), everything else is allowed.
 * DATA:  the SECCOMP_RET_DATA to return (e.g. one of the monitor's own trace codes).
 * THEN:  what to try once the filter is in place:
 *        "socket" (the default): socket(AF_INET, SOCK_STREAM, 0);
 *        "getpid": getpid(), which the policy allows (only the stacked filter traces it);
 *        "execgate": the exec gate's own call, execveat(1022, "", ..., AT_EMPTY_PATH, magic);
 *        "notice": the "sandboxed" notice syscall(0x2F000FDB, 0x5AFEB0C5).
 *
 * It prints "ESCAPED" and exits 0 if the forbidden call ran; it exits 3 if the call failed.
 * A correct monitor never lets it get that far: the run is a VIOLATION.
 * Built static; needs the policy to allow seccomp or prctl, write and exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aiosandbox.h"

static void say(const char *text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--me-here")) {
    if (sbx_sandbox_me_here() != 0) return 4;
    argv++;
    argc--;
  }
  if (argc < 4) {
    say("usage: filter_stacker [--me-here] seccomp|tsync|prctl all|socket DATA [THEN]\n");
    return 64;
  }
  const char *how = argv[1];
  int all = !strcmp(argv[2], "all");
  unsigned data = (unsigned)strtoul(argv[3], NULL, 0) & SECCOMP_RET_DATA;
  const char *then = argc > 4 ? argv[4] : "socket";

  struct sock_filter only_socket[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | data),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_filter everything[] = {
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | data),
  };
  struct sock_fprog prog;
  if (all) {
    prog.len = sizeof everything / sizeof everything[0];
    prog.filter = everything;
  } else {
    prog.len = sizeof only_socket / sizeof only_socket[0];
    prog.filter = only_socket;
  }
  long rc;
  if (!strcmp(how, "prctl")) {
    rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
  } else {
    unsigned flags = !strcmp(how, "tsync") ? SECCOMP_FILTER_FLAG_TSYNC : 0;
    rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  }
  if (rc != 0) return 2;

  if (!strcmp(then, "execgate")) {
    char *args[] = {"x", NULL};
    rc = syscall(SYS_execveat, 1022, "", args, args + 1, 0x1000 /* AT_EMPTY_PATH */,
                 0x921C2C34L);
  } else if (!strcmp(then, "notice")) {
    rc = syscall(0x2F000FDB, 0x5AFEB0C5L);
    rc = rc == -1 && errno == ENOSYS ? 0 : -1; /* reaching here means it was let through */
  } else if (!strcmp(then, "getpid")) {
    rc = syscall(SYS_getpid);
  } else {
    rc = socket(AF_INET, SOCK_STREAM, 0);
  }
  if (rc < 0) return 3;
  say("ESCAPED\n");
  return 0;
}
