/* A C sandboxee built on aiosandbox.h, for tests/sandbox/test_client.py.
 *
 * usage: c_comms FD SCENARIO
 * FD is moved to fd 1023 (the comms channel) first; SCENARIO picks what runs.
 * Results go back over comms, or to stdout as one line per step where the
 * channel itself is under test. */
#include "aiosandbox.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <time.h>

static int fail(const char *what) {
  printf("FAILED %s: %s\n", what, sbx_last_error());
  return 1;
}

/* Reports a step that must fail: "error: <why>" (or "unexpected success"). */
static void expect_error(int rc) {
  if (rc == 0) {
    printf("unexpected success\n");
  } else {
    printf("error: %s\n", sbx_last_error());
  }
  fflush(stdout);
}

static int count_open_fds(void) {
  int count = 0;
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL) return -1;
  while (readdir(dir) != NULL) count++;
  closedir(dir);
  return count - 3; /* ".", ".." and the directory's own fd */
}

/* Every type, received and sent back, once per round the peer asks for. */
static int echo(void) {
  for (;;) {
    uint32_t command;
    bool b;
    int32_t i32;
    int64_t i64;
    uint32_t u32;
    uint64_t u64;
    static char text[1 << 16];
    static unsigned char data[1 << 16];
    size_t text_len, data_len, tlv_len;
    uint32_t tag;
    int fd;
    if (sbx_recv_uint32(&command) != 0) return fail("command");
    if (command == 0) return 0;
    if (sbx_recv_bool(&b) != 0) return fail("bool");
    if (sbx_recv_int32(&i32) != 0) return fail("int32");
    if (sbx_recv_int64(&i64) != 0) return fail("int64");
    if (sbx_recv_uint32(&u32) != 0) return fail("uint32");
    if (sbx_recv_uint64(&u64) != 0) return fail("uint64");
    if (sbx_recv_string(text, sizeof text, &text_len) != 0) return fail("string");
    if (sbx_recv_bytes(data, sizeof data, &data_len) != 0) return fail("bytes");
    if (sbx_recv_fd(&fd) != 0) return fail("fd");
    /* The fd is a pipe's write end: prove it is the real one. */
    if (write(fd, "from C", 6) != 6) return fail("write to the received fd");
    if (sbx_send_bool(!b) != 0) return fail("send bool");
    if (sbx_send_int32(i32) != 0) return fail("send int32");
    if (sbx_send_int64(i64) != 0) return fail("send int64");
    if (sbx_send_uint32(u32) != 0) return fail("send uint32");
    if (sbx_send_uint64(u64) != 0) return fail("send uint64");
    if (sbx_send_string_n(text, text_len) != 0) return fail("send string");
    if (sbx_send_bytes(data, data_len) != 0) return fail("send bytes");
    if (sbx_send_fd(fd) != 0) return fail("send fd");
    close(fd);
    /* A user TLV last: its tag and value come back as they came. */
    if (sbx_recv_tlv(&tag, data, sizeof data, &tlv_len) != 0) return fail("tlv");
    if (sbx_send_tlv(tag, data, tlv_len) != 0) return fail("send tlv");
  }
}

/* Frames that must be refused, in the order test_client.py sends them. */
static int refusals(void) {
  unsigned char small[8];
  char text[6];
  size_t length;
  uint32_t u32;
  bool b;
  int fd;
  int before;

  /* 1. bytes longer than the buffer: refused, skipped; the next frame reads. */
  expect_error(sbx_recv_bytes(small, sizeof small, &length));
  if (sbx_recv_uint32(&u32) != 0) return fail("uint32 after a long frame");
  printf("uint32 %u\n", (unsigned)u32);
  /* 2. a string where a uint32 is expected. */
  expect_error(sbx_recv_uint32(&u32));
  /* 3. a bool byte of 2. */
  expect_error(sbx_recv_bool(&b));
  /* 4. a string that fits exactly (5 + NUL), then one that does not. */
  if (sbx_recv_string(text, sizeof text, &length) != 0) return fail("string that fits");
  printf("string %s %zu\n", text, length);
  expect_error(sbx_recv_string(text, sizeof text, &length));
  /* 5. a flood: one fd frame carrying many fds; one is kept. */
  before = count_open_fds();
  if (sbx_recv_fd(&fd) != 0) return fail("fd of a flood");
  printf("fds opened by a flood %d\n", count_open_fds() - before);
  close(fd);
  /* 6. fds riding on a uint32 frame are not installed. */
  before = count_open_fds();
  if (sbx_recv_uint32(&u32) != 0) return fail("uint32 carrying fds");
  printf("fds opened by a uint32 %d\n", count_open_fds() - before);
  /* 7. an fd frame without an fd, then a uint32 where an fd is expected. */
  expect_error(sbx_recv_fd(&fd));
  expect_error(sbx_recv_fd(&fd));
  /* 8. a user TLV must have a user tag. */
  expect_error(sbx_send_tlv(SBX_TAG_UINT32, "abcd", 4));
  /* 9. a length of 2^63: the channel breaks, and stays broken. */
  before = count_open_fds();
  expect_error(sbx_recv_bytes(small, sizeof small, &length));
  expect_error(sbx_recv_uint32(&u32));
  printf("fds opened %d\n", count_open_fds() - before);
  return 0;
}

/* The peer closes in the middle of a frame. */
static int truncated(void) {
  unsigned char data[256];
  size_t length;
  uint32_t u32;
  expect_error(sbx_recv_bytes(data, sizeof data, &length));
  expect_error(sbx_recv_uint32(&u32));
  return 0;
}

static void *sleeper(void *unused) {
  (void)unused;
  struct timespec ts = {60, 0};
  nanosleep(&ts, NULL);
  return NULL;
}

/* Mode (b): sandbox, then report what two syscalls return under the policy. */
static int sandbox(int threads) {
  pthread_t thread;
  if (threads && pthread_create(&thread, NULL, sleeper, NULL) != 0) return 2;
  if (sbx_sandbox_me_here() != 0) {
    printf("refused: %s\n", sbx_last_error());
    return 3;
  }
  /* uname is blocked with an errno; getppid is not in the policy at all (it
   * returns ENOSYS here because no monitor traces this process). */
  struct utsname name;
  int uname_errno = uname(&name) == 0 ? 0 : errno;
  long ppid = syscall(SYS_getppid);
  int ppid_errno = ppid < 0 ? errno : 0;
  int again = sbx_sandbox_me_here();
  uint32_t bye;
  if (sbx_send_int32(uname_errno) != 0 || sbx_send_int32(ppid_errno) != 0 ||
      sbx_send_int32(again) != 0 || sbx_send_string(sbx_last_error()) != 0) {
    return 4;
  }
  /* Until the supervisor has looked at us. */
  return sbx_recv_uint32(&bye) == 0 ? 0 : 5;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: c_comms FD SCENARIO\n");
    return 64;
  }
  int fd = atoi(argv[1]);
  if (fd != SBX_COMMS_FD) {
    if (dup2(fd, SBX_COMMS_FD) < 0) return 65;
    close(fd);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *scenario = argv[2];
  if (!strcmp(scenario, "echo")) return echo();
  if (!strcmp(scenario, "refusals")) return refusals();
  if (!strcmp(scenario, "truncated")) return truncated();
  if (!strcmp(scenario, "sandbox")) return sandbox(0);
  if (!strcmp(scenario, "sandbox-threads")) return sandbox(1);
  fprintf(stderr, "unknown scenario %s\n", scenario);
  return 64;
}
