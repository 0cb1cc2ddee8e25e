/* The hostile sandboxee of tests/sandbox/test_mounts.py: it tries to get more out of its mounts and
 * its user namespace than the policy gave.  argv[1] picks the attempt; the exit status is
 * 0 when it succeeded, else the errno that stopped it.
 *
 *   exit N               exit with N (the image `drop ... exec` runs)
 *   write-dev PATH       open PATH for writing and write 512 bytes 'X' at its start
 *   read PATH            copy PATH to stdout
 *   drop PATH exec ARGS  write stdin to PATH (mode 0755), then execv(PATH, ARGS)
 *   drop PATH mmap       write stdin to PATH (mode 0755), then map it PROT_READ|PROT_EXEC
 *   mkfiles DIR MAX      create empty files DIR/0, DIR/1, ... until one fails or MAX exist;
 *                        prints how many it made (0 if it stopped at MAX)
 *   inotify              take inotify instances until the kernel refuses one; prints
 *                        "COUNT ERRNO\n", then holds them until stdin ends
 *   proc-mem PATH        open PATH (a /proc/<pid>/mem) for writing
 *
 * Built static, so that its start-up needs only what allow_static_startup() allows. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <unistd.h>

static int drop(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (fd < 0) return errno;
  char buf[65536];
  ssize_t n;
  while ((n = read(0, buf, sizeof buf)) > 0)
    if (write(fd, buf, (size_t)n) != n) return errno;
  if (n < 0 || close(fd) != 0) return errno;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 64;
  const char *mode = argv[1];
  if (!strcmp(mode, "exit") && argc == 3) return atoi(argv[2]);
  if (!strcmp(mode, "write-dev") && argc == 3) {
    int fd = open(argv[2], O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char block[512];
    memset(block, 'X', sizeof block);
    if (pwrite(fd, block, sizeof block, 0) != (ssize_t)sizeof block) return errno;
    return fsync(fd) == 0 || errno == EINVAL || errno == EROFS ? 0 : errno;
  }
  if (!strcmp(mode, "read") && argc == 3) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
      if (write(1, buf, (size_t)n) != n) return errno;
    return n < 0 ? errno : 0;
  }
  if (!strcmp(mode, "drop") && argc >= 4) {
    int rc = drop(argv[2]);
    if (rc) return 100;
    if (!strcmp(argv[3], "exec")) {
      execv(argv[2], argv + 4);
      return errno;
    }
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 101;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    return p == MAP_FAILED ? errno : 0;
  }
  if (!strcmp(mode, "mkfiles") && argc == 4) {
    long max = atol(argv[3]);
    char path[4096];
    for (long i = 0; i < max; i++) {
      snprintf(path, sizeof path, "%s/%ld", argv[2], i);
      int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) {
        int error = errno;
        printf("%ld\n", i);
        return error;
      }
      close(fd);
    }
    printf("0\n");
    return 0;
  }
  if (!strcmp(mode, "inotify") && argc == 2) {
    int count = 0, error = 0;
    for (; count < 100000; count++) {
      if (inotify_init1(IN_CLOEXEC) < 0) {
        error = errno;
        break;
      }
    }
    printf("%d %d\n", count, error);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
  }
  if (!strcmp(mode, "proc-mem") && argc == 3) {
    int fd = open(argv[2], O_RDWR | O_CLOEXEC);
    return fd < 0 ? errno : 0;
  }
  return 64;
}
