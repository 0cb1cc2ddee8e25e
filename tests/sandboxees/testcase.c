/* One sandboxee for the test suite: argv[1] picks what it does (see usage()).
 * Built twice by the tests: static (-static) and dynamic. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int usage(void) {
  static const char text[] = "usage: testcase MODE [ARGS]\n";
  write(2, text, sizeof text - 1);
  return 64;
}

static long arg(int argc, char **argv, int i) {
  return i < argc ? strtol(argv[i], NULL, 0) : 0;
}

static void *violating_thread(void *unused) {
  (void)unused;
  syscall(SYS_getppid); /* not in the policy: the whole sandboxee must die */
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage();
  const char *mode = argv[1];
  if (!strcmp(mode, "exit")) return (int)arg(argc, argv, 2);
  if (!strcmp(mode, "abort")) abort();
  if (!strcmp(mode, "sleep")) {
    struct timespec ts = {arg(argc, argv, 2), 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    return 0;
  }
  if (!strcmp(mode, "syscall")) {
    long rc = syscall(arg(argc, argv, 2), arg(argc, argv, 3), arg(argc, argv, 4), arg(argc, argv, 5));
    return rc < 0 ? errno : 0;
  }
  if (!strcmp(mode, "int80")) {
#if defined(__x86_64__)
    /* exit(3) through the i386 ABI: a foreign-arch syscall. */
    __asm__ volatile("mov $1, %%eax\n mov $3, %%ebx\n int $0x80" ::: "eax", "ebx", "memory");
#endif
    return 99;
  }
  if (!strcmp(mode, "x32")) {
    /* getpid with the x32 ABI bit set. */
    long rc = syscall(0x40000000L | SYS_getpid);
    return rc < 0 ? errno : 0;
  }
  if (!strcmp(mode, "write")) {
    int fd = (int)arg(argc, argv, 2);
    return write(fd, "hi\n", 3) == 3 ? 0 : errno;
  }
  if (!strcmp(mode, "mprotect")) {
    long prot = arg(argc, argv, 2), len = arg(argc, argv, 3);
    void *p = mmap(NULL, 0x4000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 100;
    return mprotect(p, len, prot) == 0 ? 0 : errno;
  }
  if (!strcmp(mode, "cat")) {
    /* stdin (or the file named) to stdout */
    int in = argc > 2 ? open(argv[2], O_RDONLY) : 0;
    if (in < 0) return errno;
    char buf[4096];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
      if (write(1, buf, n) != n) return errno;
    return n < 0 ? errno : 0;
  }
  if (!strcmp(mode, "createnew")) {
    /* EEXIST (17) if the file is there already: the sandbox is not fresh */
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL, 0600);
    return fd < 0 ? errno : 0;
  }
  if (!strcmp(mode, "writefile")) {
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return errno;
    long total = arg(argc, argv, 3);
    static char block[65536];
    memset(block, 'x', sizeof block);
    while (total > 0) {
      ssize_t n = write(fd, block, total < (long)sizeof block ? total : (long)sizeof block);
      if (n < 0) return errno;
      total -= n;
    }
    return close(fd) == 0 ? 0 : errno;
  }
  if (!strcmp(mode, "identity")) {
    char host[256] = "";
    gethostname(host, sizeof host);
    printf("uid=%d gid=%d pid=%d host=%s\n", (int)getuid(), (int)getgid(), (int)getpid(), host);
    return 0;
  }
  if (!strcmp(mode, "forkbomb")) {
    for (;;) fork();
  }
  if (!strcmp(mode, "thread")) {
    pthread_t t;
    if (pthread_create(&t, NULL, violating_thread, NULL) != 0) return 100;
    pthread_join(t, NULL);
    return 0;
  }
  if (!strcmp(mode, "loopback")) {
    /* A UDP datagram to itself over 127.0.0.1: needs lo up. */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return errno;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return errno;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) return errno;
    if (sendto(fd, "ping", 4, 0, (struct sockaddr *)&addr, len) != 4) return errno;
    char buf[8];
    return recvfrom(fd, buf, sizeof buf, 0, NULL, NULL) == 4 ? 0 : errno;
  }
  if (!strcmp(mode, "spin")) {
    if (argc > 2 && !strcmp(argv[2], "ignore-xcpu")) signal(SIGXCPU, SIG_IGN);
    for (volatile unsigned long i = 0;; i++) {}
  }
  return usage();
}
