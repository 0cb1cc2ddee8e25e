/* Times a syscall, for benchmarks/bench_syscall.py and `python3 -m benchmarks`. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* argv: calls repeats ppid|pgid [allow|chain]: which syscall to time, and optionally a
 * filter of our own to load first (bare runs only): one RET ALLOW, or a load of arg 0 (so
 * that the kernel cannot cache the verdict) and CHAIN tests of the number that all miss. */
#define CHAIN 450
static struct sock_filter chain[CHAIN + 3];

static void load(const char *kind) {
    unsigned short n = 0;
    if (strcmp(kind, "chain") == 0) {
        chain[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                  offsetof(struct seccomp_data, args[0]));
        chain[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
        for (int i = 0; i < CHAIN; i++)
            chain[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 100000 + i, 0, 0);
    }
    chain[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {n, chain};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        exit(1);
    }
}

int main(int argc, char **argv) {
    long calls = atol(argv[1]);
    int repeats = atoi(argv[2]);
    long nr = strcmp(argv[3], "pgid") == 0 ? SYS_getpgid : SYS_getppid;
    if (argc > 4)
        load(argv[4]);
    for (int r = 0; r < repeats; r++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (long i = 0; i < calls; i++)
            syscall(nr, 0);
        clock_gettime(CLOCK_MONOTONIC, &end);
        double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
        printf("%.2f\n", ns / calls);
    }
    return 0;
}
