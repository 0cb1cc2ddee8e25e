/* A sandboxee that attacks the supervisor through its stdio (tests/sandbox/test_stdio.py).
 *
 *   inflight   writes "before\n", then sends its fds 0, 1 and 2 over its comms channel
 *              (fd 1023) and over fd 1 itself, as SCM_RIGHTS nobody will receive: the
 *              stream ends stay alive in flight after it exits.
 *   flood FD N writes N MiB to FD as fast as it can (errors ignored).
 *   tamper     sets O_NONBLOCK and clears O_APPEND on fds 0-2, takes flock(LOCK_EX) on
 *              fd 1, shuts fd 1 down if it is a socket, after writing "tampered\n".
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

static void send_fds(int via) {
  int fds[3] = {0, 1, 2};
  char byte = 'x';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  char control[CMSG_SPACE(sizeof fds)];
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                       .msg_controllen = sizeof control};
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof fds);
  memcpy(CMSG_DATA(cmsg), fds, sizeof fds);
  sendmsg(via, &msg, MSG_NOSIGNAL);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (!strcmp(argv[1], "inflight")) {
    write(1, "before\n", 7);
    send_fds(1023);
    send_fds(1);
    send_fds(2);
    return 0;
  }
  if (!strcmp(argv[1], "flood") && argc == 4) {
    static char chunk[1 << 20];
    int fd = atoi(argv[2]);
    long count = atol(argv[3]);
    memset(chunk, 'o', sizeof chunk);
    for (long i = 0; i < count; i++) {
      size_t done = 0;
      while (done < sizeof chunk) {
        ssize_t n = write(fd, chunk + done, sizeof chunk - done);
        if (n <= 0) return 3;
        done += (size_t)n;
      }
    }
    return 0;
  }
  if (!strcmp(argv[1], "tamper")) {
    write(1, "tampered\n", 9);
    for (int fd = 0; fd < 3; fd++) {
      int flags = fcntl(fd, F_GETFL);
      if (flags >= 0) fcntl(fd, F_SETFL, (flags | O_NONBLOCK) & ~O_APPEND);
    }
    flock(1, LOCK_EX);
    shutdown(1, SHUT_WR);
    return 0;
  }
  return 2;
}
