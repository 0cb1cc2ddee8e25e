/*
 * aiosandbox.h -- the sandboxee side of aiosandbox for programs written in C.
 *
 * Header-only (every function is `static inline`), C99, no allocation: every
 * receive writes into a buffer the caller gives together with its size.
 *
 * Theory of operation
 * -------------------
 * A sandboxee talks to its supervisor over one AF_UNIX stream socket, always
 * on fd 1023 (SBX_COMMS_FD).  Every message is one frame: a packed 12-byte
 * little-endian header {uint32 tag, uint64 length} followed by `length` value
 * bytes (docs/protocol.md in the aiosandbox sources).  An fd travels as a
 * TAG_FD frame of length 0 whose header is sent in one sendmsg() together with
 * one SCM_RIGHTS fd.
 *
 * Plain values are written with write() and read with read(), fds with
 * sendmsg()/recvmsg(): a policy that allows read and write (plus sendmsg and
 * recvmsg to pass fds) is all this library needs.  A read() never installs an
 * fd the peer attached to a frame we did not ask an fd for: the kernel drops
 * it.  sbx_recv_fd() keeps the first fd of its frame and closes any other.
 *
 * The channel is never left in the middle of a frame.  A frame whose value
 * does not fit the caller's buffer, or whose tag is not the one asked for, is
 * read to its end and thrown away (the call fails, the next one starts on the
 * next frame) as long as it is at most SBX_DRAIN_LIMIT bytes; a longer one, a
 * peer that closes mid-frame or a read error marks the channel broken, and
 * every later call fails at once.  So a hostile or confused peer can make a
 * call fail, never make the program allocate, or read one frame as another.
 *
 * Every function returns 0 on success and -1 on failure; sbx_last_error()
 * then says why, and a receive's outputs hold 0 (an fd: -1).  The broken flag and the last error live in this header's
 * static functions, so they are per translation unit: use the comms from one
 * .c file, or expect each file to keep its own view of them.
 *
 * A write to a channel the supervisor has closed raises SIGPIPE, which ends
 * the sandboxee unless it ignores the signal: without its supervisor a
 * sandboxee has nothing left to do.
 *
 * Mode (b) of the Sandbox2 guide, "tell the executor when to be sandboxed":
 * a binary started with sandbox_before_exec=False runs without its policy,
 * initialises freely, then calls sbx_sandbox_me_here().  From then on only
 * the syscalls its policy allows run.
 *
 * Mode (c), "a custom fork server": the binary of a fork executor (children
 * come from Executor.from_fork_server(it)) initialises once, then loops on
 * sbx_wait_and_fork(), which forks one child per request of the supervisor,
 * in pid, user and ipc namespaces of its own below a small init, and returns
 * 0 in it; the child goes on to sbx_sandbox_me_here().  The
 * request is msgpack, read by a small reader here that takes that one shape,
 * checks every count against the bytes left and allocates nothing.
 *
 * Include this header before any system header, or compile with
 * -D_GNU_SOURCE (or -std=gnu99 and later): it needs syscall(), which strict
 * -std=c99 hides.
 */
#ifndef AIOSANDBOX_H
#define AIOSANDBOX_H

#if !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* The channel's fd inside every sandboxee (Sandbox2's kSandbox2ClientCommsFD). */
#define SBX_COMMS_FD 1023

/* Value tags, Sandbox2's numbers (docs/protocol.md).  User tags for
 * sbx_send_tlv()/sbx_recv_tlv() must be below 0x80000000. */
#define SBX_TAG_BOOL 0x80000001u
#define SBX_TAG_INT32 0x80000006u
#define SBX_TAG_UINT32 0x80000007u
#define SBX_TAG_INT64 0x80000008u
#define SBX_TAG_UINT64 0x80000009u
#define SBX_TAG_STRING 0x80000100u
#define SBX_TAG_BYTES 0x80000101u
#define SBX_TAG_MSG 0x80000102u
#define SBX_TAG_FD 0x80000201u
#define SBX_TAG_CREDS 0x80000202u
#define SBX_TAG_USER_MAX 0x7FFFFFFFu

/* Control tags of sbx_sandbox_me_here() (aiosandbox's own). */
#define SBX_TAG_SANDBOX_ME_HERE 0x80000301u
#define SBX_TAG_POLICY 0x80000302u
#define SBX_TAG_ERROR 0x80000303u

/* Control tags of sbx_wait_and_fork(), mode (c). */
#define SBX_TAG_FORK_REQUEST 0x80000310u
#define SBX_TAG_FORK_GO 0x80000311u

/* The call that tells the monitor "my filter is in place": a syscall number
 * no kernel has, with a marker in its first argument.  The filter traces it;
 * it then fails with ENOSYS, which is ignored. */
#define SBX_MAGIC_SYSCALL_NR 0x2F000FDBL
#define SBX_SANDBOXED_MAGIC 0x5AFEB0C5L

/* The status a sandboxee exits with when the kernel refuses its policy: it
 * must never go on unfiltered. */
#define SBX_EXIT_POLICY_FAILED 125

/* A rejected frame (too long for the buffer, or of another type) up to this
 * size is read and dropped, keeping the channel usable; a longer one breaks
 * the channel instead of keeping the program busy reading it. */
#ifndef SBX_DRAIN_LIMIT
#define SBX_DRAIN_LIMIT (1u << 20)
#endif

/* The kernel's limit on a classic BPF program (BPF_MAXINSNS). */
#define SBX_MAX_FILTER_INSNS 4096

/* Room for this many fds in one receive: more than one is a peer's mistake
 * (or an attack); the extra ones are closed, whatever did not fit the kernel
 * closes itself. */
#define SBX_FD_ROOM 16

#ifndef SECCOMP_FILTER_FLAG_TSYNC
#define SECCOMP_FILTER_FLAG_TSYNC 1
#endif
#ifndef SYS_seccomp
#if defined(__x86_64__)
#define SYS_seccomp 317
#elif defined(__aarch64__)
#define SYS_seccomp 277
#else
#error "aiosandbox.h: no seccomp syscall number for this architecture"
#endif
#endif

#if defined(__GNUC__)
#define SBX_MUST_CHECK __attribute__((warn_unused_result))
#define SBX_FORMAT(f, a) __attribute__((format(printf, f, a)))
#else
#define SBX_MUST_CHECK
#define SBX_FORMAT(f, a)
#endif

/* ---- state (per translation unit, see above) ---------------------------- */

#define SBX__ERROR_SIZE 256

static inline char *sbx__error_buffer(void) {
  static char message[SBX__ERROR_SIZE];
  return message;
}

static inline bool *sbx__broken(void) {
  static bool broken = false;
  return &broken;
}

/* Why the last failing call failed; "" before any failure. */
static inline const char *sbx_last_error(void) { return sbx__error_buffer(); }

SBX_FORMAT(1, 2)
static inline int sbx__fail(const char *format, ...) {
  int saved = errno;
  va_list args;
  va_start(args, format);
  vsnprintf(sbx__error_buffer(), SBX__ERROR_SIZE, format, args);
  va_end(args);
  errno = saved;
  return -1;
}

SBX_FORMAT(1, 2)
static inline int sbx__break(const char *format, ...) {
  int saved = errno;
  va_list args;
  va_start(args, format);
  vsnprintf(sbx__error_buffer(), SBX__ERROR_SIZE, format, args);
  va_end(args);
  *sbx__broken() = true;
  errno = saved;
  return -1;
}

/* ---- raw I/O ------------------------------------------------------------ */

static inline void sbx__put_header(unsigned char out[12], uint32_t tag, uint64_t length) {
  for (int i = 0; i < 4; i++) out[i] = (unsigned char)(tag >> (8 * i));
  for (int i = 0; i < 8; i++) out[4 + i] = (unsigned char)(length >> (8 * i));
}

static inline void sbx__get_header(const unsigned char in[12], uint32_t *tag, uint64_t *length) {
  uint32_t t = 0;
  uint64_t n = 0;
  for (int i = 0; i < 4; i++) t |= (uint32_t)in[i] << (8 * i);
  for (int i = 0; i < 8; i++) n |= (uint64_t)in[4 + i] << (8 * i);
  *tag = t;
  *length = n;
}

static inline int sbx__write_all(const void *data, size_t size) {
  const unsigned char *p = (const unsigned char *)data;
  while (size > 0) {
    ssize_t n = write(SBX_COMMS_FD, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return sbx__break("comms: write failed: %s", strerror(errno));
    p += n;
    size -= (size_t)n;
  }
  return 0;
}

/* Reads exactly `size` bytes; `what` names them in the error. */
static inline int sbx__read_all(void *data, size_t size, const char *what) {
  unsigned char *p = (unsigned char *)data;
  while (size > 0) {
    ssize_t n = read(SBX_COMMS_FD, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sbx__break("comms: reading %s failed: %s", what, strerror(errno));
    if (n == 0) return sbx__break("comms: the peer closed the channel while sending %s", what);
    p += n;
    size -= (size_t)n;
  }
  return 0;
}

/* Reads and drops the rest of a rejected frame, then fails with `message`. */
static inline int sbx__reject(uint64_t left, const char *message) {
  char scratch[4096];
  if (left > SBX_DRAIN_LIMIT) {
    return sbx__break("%s; the frame is too long to skip, the channel is broken", message);
  }
  while (left > 0) {
    size_t chunk = left < sizeof scratch ? (size_t)left : sizeof scratch;
    if (sbx__read_all(scratch, chunk, "a rejected frame") != 0) return -1;
    left -= chunk;
  }
  return sbx__fail("%s", message);
}

static inline int sbx__check_channel(void) {
  if (*sbx__broken()) {
    return sbx__fail("comms: the channel is broken by an earlier error");
  }
  return 0;
}

static inline int sbx__send_frame(uint32_t tag, const void *value, uint64_t length) {
  if (sbx__check_channel() != 0) return -1;
  if (length > 0 && value == NULL) return sbx__fail("comms: no data to send");
  unsigned char frame[1024];
  sbx__put_header(frame, tag, length);
  /* Small frames go out in one write, as Sandbox2 does. */
  if (length <= sizeof frame - 12) {
    if (length > 0) memcpy(frame + 12, value, (size_t)length);
    return sbx__write_all(frame, 12 + (size_t)length);
  }
  if (length > SIZE_MAX) return sbx__fail("comms: a frame too large for this machine");
  if (sbx__write_all(frame, 12) != 0) return -1;
  return sbx__write_all(value, (size_t)length);
}

static inline int sbx__read_header(uint32_t *tag, uint64_t *length) {
  unsigned char header[12];
  if (sbx__check_channel() != 0) return -1;
  if (sbx__read_all(header, sizeof header, "a frame header") != 0) return -1;
  sbx__get_header(header, tag, length);
  return 0;
}

static inline const char *sbx__tag_name(uint32_t tag) {
  switch (tag) {
    case SBX_TAG_BOOL: return "bool";
    case SBX_TAG_INT32: return "int32";
    case SBX_TAG_UINT32: return "uint32";
    case SBX_TAG_INT64: return "int64";
    case SBX_TAG_UINT64: return "uint64";
    case SBX_TAG_STRING: return "string";
    case SBX_TAG_BYTES: return "bytes";
    case SBX_TAG_MSG: return "msg";
    case SBX_TAG_FD: return "fd";
    case SBX_TAG_CREDS: return "creds";
    case SBX_TAG_SANDBOX_ME_HERE: return "sandbox-me-here";
    case SBX_TAG_POLICY: return "policy";
    case SBX_TAG_ERROR: return "error";
    case SBX_TAG_FORK_REQUEST: return "fork request";
    case SBX_TAG_FORK_GO: return "fork go";
    default: return tag <= SBX_TAG_USER_MAX ? "user tlv" : "unknown";
  }
}

/* Receives one frame of tag `want` whose value has exactly `size` bytes. */
static inline int sbx__recv_fixed(uint32_t want, void *out, size_t size) {
  uint32_t tag;
  uint64_t length;
  char message[160];
  if (sbx__read_header(&tag, &length) != 0) return -1;
  if (tag != want || length != size) {
    snprintf(message, sizeof message,
             "comms: expected %s (tag %#x, %zu bytes), received %s (tag %#x, %llu bytes)",
             sbx__tag_name(want), want, size, sbx__tag_name(tag), tag,
             (unsigned long long)length);
    return sbx__reject(length, message);
  }
  return sbx__read_all(out, size, sbx__tag_name(want));
}

/* Receives a frame of tag `want` into `buf` (capacity `cap`); its length goes
 * to `*length`. */
static inline int sbx__recv_variable(uint32_t want, void *buf, size_t cap, uint64_t *length) {
  uint32_t tag;
  char message[160];
  if (sbx__read_header(&tag, length) != 0) return -1;
  if (tag != want) {
    snprintf(message, sizeof message, "comms: expected %s (tag %#x), received %s (tag %#x)",
             sbx__tag_name(want), want, sbx__tag_name(tag), tag);
    return sbx__reject(*length, message);
  }
  if (*length > cap) {
    snprintf(message, sizeof message, "comms: a %s value of %llu bytes does not fit in %zu bytes",
             sbx__tag_name(want), (unsigned long long)*length, cap);
    return sbx__reject(*length, message);
  }
  return *length ? sbx__read_all(buf, (size_t)*length, sbx__tag_name(want)) : 0;
}

/* ---- TLV ---------------------------------------------------------------- */

/* Sends `length` bytes at `value` under a user tag (below 0x80000000). */
SBX_MUST_CHECK
static inline int sbx_send_tlv(uint32_t tag, const void *value, uint64_t length) {
  if (tag > SBX_TAG_USER_MAX) return sbx__fail("comms: user tag %#x is not below 0x80000000", tag);
  return sbx__send_frame(tag, value, length);
}

/* Receives a frame with a user tag into `buf` (capacity `cap`): its tag goes
 * to `*tag` and its length to `*length`.  A value longer than `cap` or a
 * frame of one of the reserved tags (an int, a string, an fd...) fails. */
SBX_MUST_CHECK
static inline int sbx_recv_tlv(uint32_t *tag, void *buf, size_t cap, size_t *length) {
  uint64_t n;
  char message[160];
  *tag = 0;
  *length = 0;
  if (sbx__read_header(tag, &n) != 0) return -1;
  if (*tag > SBX_TAG_USER_MAX) {
    snprintf(message, sizeof message, "comms: expected a user tlv, received %s (tag %#x)",
             sbx__tag_name(*tag), *tag);
    return sbx__reject(n, message);
  }
  if (n > cap) {
    snprintf(message, sizeof message, "comms: a tlv value of %llu bytes does not fit in %zu bytes",
             (unsigned long long)n, cap);
    return sbx__reject(n, message);
  }
  if (n && sbx__read_all(buf, (size_t)n, "a tlv") != 0) return -1;
  *length = (size_t)n;
  return 0;
}

/* ---- integers and bools (little-endian on the wire) --------------------- */

SBX_MUST_CHECK
static inline int sbx_send_uint64(uint64_t value) {
  unsigned char le[8];
  for (int i = 0; i < 8; i++) le[i] = (unsigned char)(value >> (8 * i));
  return sbx__send_frame(SBX_TAG_UINT64, le, sizeof le);
}

SBX_MUST_CHECK
static inline int sbx_recv_uint64(uint64_t *value) {
  unsigned char le[8];
  uint64_t v = 0;
  *value = 0;
  if (sbx__recv_fixed(SBX_TAG_UINT64, le, sizeof le) != 0) return -1;
  for (int i = 0; i < 8; i++) v |= (uint64_t)le[i] << (8 * i);
  *value = v;
  return 0;
}

SBX_MUST_CHECK
static inline int sbx_send_int64(int64_t value) {
  unsigned char le[8];
  uint64_t u = (uint64_t)value;
  for (int i = 0; i < 8; i++) le[i] = (unsigned char)(u >> (8 * i));
  return sbx__send_frame(SBX_TAG_INT64, le, sizeof le);
}

SBX_MUST_CHECK
static inline int sbx_recv_int64(int64_t *value) {
  unsigned char le[8];
  uint64_t u = 0;
  *value = 0;
  if (sbx__recv_fixed(SBX_TAG_INT64, le, sizeof le) != 0) return -1;
  for (int i = 0; i < 8; i++) u |= (uint64_t)le[i] << (8 * i);
  memcpy(value, &u, sizeof u); /* two's complement: no implementation-defined cast */
  return 0;
}

SBX_MUST_CHECK
static inline int sbx_send_uint32(uint32_t value) {
  unsigned char le[4];
  for (int i = 0; i < 4; i++) le[i] = (unsigned char)(value >> (8 * i));
  return sbx__send_frame(SBX_TAG_UINT32, le, sizeof le);
}

SBX_MUST_CHECK
static inline int sbx_recv_uint32(uint32_t *value) {
  unsigned char le[4];
  uint32_t v = 0;
  *value = 0;
  if (sbx__recv_fixed(SBX_TAG_UINT32, le, sizeof le) != 0) return -1;
  for (int i = 0; i < 4; i++) v |= (uint32_t)le[i] << (8 * i);
  *value = v;
  return 0;
}

SBX_MUST_CHECK
static inline int sbx_send_int32(int32_t value) {
  unsigned char le[4];
  uint32_t u = (uint32_t)value;
  for (int i = 0; i < 4; i++) le[i] = (unsigned char)(u >> (8 * i));
  return sbx__send_frame(SBX_TAG_INT32, le, sizeof le);
}

SBX_MUST_CHECK
static inline int sbx_recv_int32(int32_t *value) {
  unsigned char le[4];
  uint32_t u = 0;
  *value = 0;
  if (sbx__recv_fixed(SBX_TAG_INT32, le, sizeof le) != 0) return -1;
  for (int i = 0; i < 4; i++) u |= (uint32_t)le[i] << (8 * i);
  memcpy(value, &u, sizeof u);
  return 0;
}

SBX_MUST_CHECK
static inline int sbx_send_bool(bool value) {
  unsigned char byte = value ? 1 : 0;
  return sbx__send_frame(SBX_TAG_BOOL, &byte, 1);
}

/* A bool byte other than 0 or 1 is a protocol error (the frame is consumed). */
SBX_MUST_CHECK
static inline int sbx_recv_bool(bool *value) {
  unsigned char byte;
  *value = false;
  if (sbx__recv_fixed(SBX_TAG_BOOL, &byte, 1) != 0) return -1;
  if (byte > 1) return sbx__fail("comms: a bool of value %u (0 or 1 expected)", byte);
  *value = byte == 1;
  return 0;
}

/* ---- strings and bytes -------------------------------------------------- */

/* Sends a NUL-terminated string (without its terminator). */
SBX_MUST_CHECK
static inline int sbx_send_string(const char *text) {
  return sbx__send_frame(SBX_TAG_STRING, text, strlen(text));
}

/* Sends `length` bytes of text, which may hold NUL bytes. */
SBX_MUST_CHECK
static inline int sbx_send_string_n(const char *text, size_t length) {
  return sbx__send_frame(SBX_TAG_STRING, text, length);
}

/* Receives a string into `buf` of `cap` bytes and NUL-terminates it: a string
 * of `cap` bytes or more does not fit.  `*length` (if not NULL) gets its
 * length without the terminator; a string may itself hold NUL bytes. */
SBX_MUST_CHECK
static inline int sbx_recv_string(char *buf, size_t cap, size_t *length) {
  uint64_t n;
  if (length != NULL) *length = 0;
  if (cap > 0) buf[0] = '\0';
  if (cap == 0) return sbx__fail("comms: a string buffer needs room for the terminator");
  if (sbx__recv_variable(SBX_TAG_STRING, buf, cap - 1, &n) != 0) return -1;
  buf[n] = '\0';
  if (length != NULL) *length = (size_t)n;
  return 0;
}

SBX_MUST_CHECK
static inline int sbx_send_bytes(const void *data, size_t length) {
  return sbx__send_frame(SBX_TAG_BYTES, data, length);
}

/* Receives bytes into `buf` of `cap` bytes; their count goes to `*length`. */
SBX_MUST_CHECK
static inline int sbx_recv_bytes(void *buf, size_t cap, size_t *length) {
  uint64_t n;
  *length = 0;
  if (sbx__recv_variable(SBX_TAG_BYTES, buf, cap, &n) != 0) return -1;
  *length = (size_t)n;
  return 0;
}

/* ---- fds ---------------------------------------------------------------- */

/* Sends a copy of `fd` (SCM_RIGHTS); the caller keeps its own. */
SBX_MUST_CHECK
static inline int sbx_send_fd(int fd) {
  unsigned char header[12];
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct iovec iov;
  struct msghdr msg;
  struct cmsghdr *cmsg;
  if (sbx__check_channel() != 0) return -1;
  sbx__put_header(header, SBX_TAG_FD, 0);
  memset(&control, 0, sizeof control);
  memset(&msg, 0, sizeof msg);
  iov.iov_base = header;
  iov.iov_len = sizeof header;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.space;
  msg.msg_controllen = sizeof control.space;
  cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  for (;;) {
    ssize_t n = sendmsg(SBX_COMMS_FD, &msg, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      /* Nothing was sent for a bad fd: the channel is still in step. */
      if (errno == EBADF && fcntl(SBX_COMMS_FD, F_GETFD) != -1) {
        return sbx__fail("comms: cannot send fd %d: %s", fd, strerror(errno));
      }
      return sbx__break("comms: sending an fd failed: %s", strerror(errno));
    }
    if ((size_t)n == sizeof header) return 0;
    /* A partial header: send the rest plainly, the fd went with the first byte. */
    return sbx__write_all(header + n, sizeof header - (size_t)n);
  }
}

/* Closes every fd of every SCM_RIGHTS message in `msg`, except the first fd
 * if `keep` is not NULL (which then receives it, or -1 if there was none). */
static inline void sbx__take_fds(struct msghdr *msg, int *keep) {
  struct cmsghdr *cmsg;
  if (keep != NULL) *keep = -1;
  for (cmsg = CMSG_FIRSTHDR(msg); cmsg != NULL; cmsg = CMSG_NXTHDR(msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
      if (keep != NULL && *keep == -1) {
        *keep = fd;
      } else {
        close(fd);
      }
    }
  }
}

/* Receives an fd (close-on-exec); the caller owns it. */
SBX_MUST_CHECK
static inline int sbx_recv_fd(int *fd) {
  unsigned char header[12];
  size_t got = 0;
  int received = -1;
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(SBX_FD_ROOM * sizeof(int))];
  } control;
  uint32_t tag;
  uint64_t length;
  char message[160];
  *fd = -1;
  if (sbx__check_channel() != 0) return -1;
  /* The fd rides on the header's first byte; read the header with recvmsg
   * until it is complete, keeping the first fd seen and closing the rest. */
  while (got < sizeof header) {
    struct iovec iov = {header + got, sizeof header - got};
    struct msghdr msg;
    int first;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    ssize_t n = recvmsg(SBX_COMMS_FD, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      /* The control buffer was not written: there is nothing in it to take. */
      if (received != -1) close(received);
      return sbx__break("comms: receiving an fd failed: %s", strerror(errno));
    }
    sbx__take_fds(&msg, received == -1 ? &first : NULL);
    if (received == -1) received = first;
    if (n == 0) {
      if (received != -1) close(received);
      return sbx__break("comms: the peer closed the channel while sending an fd");
    }
    got += (size_t)n;
  }
  sbx__get_header(header, &tag, &length);
  if (tag != SBX_TAG_FD || length != 0) {
    if (received != -1) close(received);
    snprintf(message, sizeof message, "comms: expected fd (tag %#x), received %s (tag %#x)",
             SBX_TAG_FD, sbx__tag_name(tag), tag);
    return sbx__reject(length, message);
  }
  if (received == -1) return sbx__fail("comms: an fd frame arrived without an fd");
  *fd = received;
  return 0;
}

/* ---- mode (b): sandbox me here ------------------------------------------ */

static inline bool *sbx__me_here_called(void) {
  static bool called = false;
  return &called;
}

SBX_FORMAT(1, 2)
static inline void sbx__die_unfiltered(const char *format, ...) {
  char line[256];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
  (void)!write(STDERR_FILENO, line, (size_t)n);
  _exit(SBX_EXIT_POLICY_FAILED);
}

/* Applies the policy the supervisor sends, now (docs/protocol.md, mode (b)):
 * asks for it, loads it for every thread (no_new_privs, then seccomp with
 * TSYNC) and tells the monitor.  Returns 0 once the filter is in place.
 *
 * Returns -1 (see sbx_last_error()) if the supervisor refuses (for instance
 * because the process has more than one thread: the monitor could not watch
 * the others; it then ends the sandboxee), if the channel fails, or on a
 * second call.  The caller must not go on after -1.  If the kernel refuses
 * the filter the process exits with status 125 after writing why to stderr:
 * it never runs on unfiltered. */
SBX_MUST_CHECK
static inline int sbx_sandbox_me_here(void) {
  static struct sock_filter program[SBX_MAX_FILTER_INSNS];
  char reason[200];
  uint32_t tag;
  uint64_t length;
  struct sock_fprog prog;
  if (*sbx__me_here_called()) {
    return sbx__fail("sandbox_me_here: called already (at most once per process)");
  }
  *sbx__me_here_called() = true;
  if (sbx__send_frame(SBX_TAG_SANDBOX_ME_HERE, NULL, 0) != 0) return -1;
  if (sbx__read_header(&tag, &length) != 0) return -1;
  if (tag == SBX_TAG_ERROR) {
    size_t keep = length < sizeof reason - 1 ? (size_t)length : sizeof reason - 1;
    if (sbx__read_all(reason, keep, "the refusal") != 0) return -1;
    reason[keep] = '\0';
    /* The rest of a long reason is dropped; the supervisor ends us anyway. */
    if (length > keep) (void)sbx__reject(length - keep, "sandbox_me_here: a long refusal");
    return sbx__fail("sandbox_me_here: the supervisor refused: %s", reason);
  }
  if (tag != SBX_TAG_POLICY) {
    char message[160];
    snprintf(message, sizeof message,
             "sandbox_me_here: expected policy or error, received %s (tag %#x)",
             sbx__tag_name(tag), tag);
    return sbx__reject(length, message);
  }
  if (length == 0 || length % sizeof(struct sock_filter) != 0 ||
      length > sizeof program) {
    char message[160];
    snprintf(message, sizeof message,
             "sandbox_me_here: a policy of %llu bytes is not 1 to %d BPF instructions",
             (unsigned long long)length, SBX_MAX_FILTER_INSNS);
    return sbx__reject(length, message);
  }
  if (sbx__read_all(program, (size_t)length, "the policy") != 0) return -1;
  prog.len = (unsigned short)(length / sizeof(struct sock_filter));
  prog.filter = program;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    sbx__die_unfiltered("aiosandbox: prctl(PR_SET_NO_NEW_PRIVS) failed: %s\n", strerror(errno));
  }
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc < 0) {
    sbx__die_unfiltered("aiosandbox: the kernel refused the seccomp policy: %s\n",
                        strerror(errno));
  }
  if (rc > 0) {
    /* TSYNC returns the id of a thread it could not move to the filter. */
    sbx__die_unfiltered("aiosandbox: thread %ld cannot take the seccomp policy\n", rc);
  }
  (void)syscall(SBX_MAGIC_SYSCALL_NR, SBX_SANDBOXED_MAGIC);
  return 0;
}

/* ---- mode (c): a custom fork server ------------------------------------- */

/* Caps on a fork request, as the Python client has them: fds to map, rlimits
 * (the kernel's RLIM_NLIMITS), and fd numbers (the kernel's NR_OPEN). */
#define SBX_FORK_MAX_FDS 4096
#define SBX_FORK_MAX_RLIMITS 16
#define SBX_FORK_FD_LIMIT (1 << 20)
/* How many procfs mounts a request may ask a child to cover. */
#define SBX_FORK_MAX_PROCS 16

/* Linux's PATH_MAX, with its terminator.  Not from limits.h, which would
 * bring names such as MAX_INPUT into every program that includes this. */
#define SBX_PATH_MAX 4096

/* The largest request frame read: 4096 fds of 5 bytes, a cwd of 4 KiB and
 * 16 rlimits need about 25 KiB, and a few procfs paths a little more; the
 * rest is room for keys a newer supervisor may add. */
#define SBX_FORK_REQUEST_MAX (1u << 16)

/* How deep an unknown key's value may nest arrays and maps before the
 * request is refused: the skipper recurses, and must not run out of stack. */
#define SBX_FORK_MAX_DEPTH 8

/* The status a forked child exits with when it cannot set itself up: it has
 * no way back into the fork server's loop, and no business running on. */
#define SBX_EXIT_CHILD_SETUP_FAILED 125

/* The status of a child's init that failed once the child was made. */
#define SBX_EXIT_INIT_FAILED 126

/* CLONE_* of linux/sched.h: glibc's sched.h defines the same names, and only
 * with _GNU_SOURCE, so this header includes neither. */
#define SBX__CLONE_THREAD 0x00010000L
#define SBX__CLONE_NEWNS 0x00020000L
#define SBX__CLONE_NEWIPC 0x08000000L
#define SBX__CLONE_NEWUSER 0x10000000L
#define SBX__CLONE_NEWPID 0x20000000L

/* Where a custom fork server made by aiosandbox finds a writable procfs of
 * its pid namespace (docs/protocol.md), through which each child's init
 * writes its id maps. */
#define SBX_PROCFS_FD 1022

/* One checked fork request: where each mapped fd goes (in the order the fds
 * arrive), the cwd (if has_cwd), the rlimits, UINT64_MAX meaning unlimited,
 * and where the child covers a procfs with one of its own pid namespace. */
struct sbx_fork_request {
  size_t target_count;
  int targets[SBX_FORK_MAX_FDS];
  bool has_cwd;
  char cwd[SBX_PATH_MAX];
  size_t rlimit_count;
  struct {
    int resource;
    uint64_t soft;
    uint64_t hard;
  } rlimits[SBX_FORK_MAX_RLIMITS];
  size_t proc_count;
  char proc[SBX_FORK_MAX_PROCS][SBX_PATH_MAX];
};

/* -- a msgpack reader for exactly this request --
 *
 * Logic: a cursor over the payload yields one item head at a time -- nil, an
 * unsigned int, a str (its bytes, consumed), or the element count of an array
 * or a map (its elements follow).  Every length and count is checked against
 * the bytes left before anything trusts it, each element taking at least one
 * byte, so a hostile count fails at once instead of driving a loop; nesting
 * is bounded.  Nothing is allocated: str values point into the payload.
 * Every other msgpack type (bool, negative int, float, bin, ext, str32,
 * array32, map32) is refused with its type byte in the message. */

enum sbx__mp_kind { SBX__MP_NIL, SBX__MP_UINT, SBX__MP_STR, SBX__MP_ARRAY, SBX__MP_MAP };

struct sbx__mp {
  const unsigned char *start;
  const unsigned char *at;
  size_t left;
};

struct sbx__mp_item {
  enum sbx__mp_kind kind;
  uint64_t value; /* the int, or the element count of an array or a map */
  const char *str; /* a str's bytes, not NUL-terminated */
  size_t length;   /* ... and their count */
};

static inline const char *sbx__mp_kind_name(enum sbx__mp_kind kind) {
  switch (kind) {
    case SBX__MP_NIL: return "nil";
    case SBX__MP_UINT: return "an integer";
    case SBX__MP_STR: return "a string";
    case SBX__MP_ARRAY: return "an array";
    case SBX__MP_MAP: return "a map";
  }
  return "?";
}

static inline size_t sbx__mp_offset(const struct sbx__mp *mp) {
  return (size_t)(mp->at - mp->start);
}

/* Takes `n` bytes (big-endian, as msgpack has them) as an unsigned number. */
static inline int sbx__mp_be(struct sbx__mp *mp, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (mp->left < n) {
    return sbx__fail("fork request: truncated at byte %zu (%zu more bytes expected)",
                     sbx__mp_offset(mp), n);
  }
  for (size_t i = 0; i < n; i++) v = (v << 8) | mp->at[i];
  mp->at += n;
  mp->left -= n;
  *out = v;
  return 0;
}

/* Reads the head of the next item (and a str's bytes). */
static inline int sbx__mp_next(struct sbx__mp *mp, struct sbx__mp_item *item) {
  size_t where = sbx__mp_offset(mp);
  uint64_t n = 0;
  unsigned char type;
  memset(item, 0, sizeof *item);
  if (mp->left == 0) return sbx__fail("fork request: truncated at byte %zu", where);
  type = *mp->at++;
  mp->left--;
  if (type <= 0x7f) {
    item->kind = SBX__MP_UINT;
    item->value = type;
    return 0;
  }
  switch (type) {
    case 0xc0: item->kind = SBX__MP_NIL; return 0;
    case 0xcc: item->kind = SBX__MP_UINT; return sbx__mp_be(mp, 1, &item->value);
    case 0xcd: item->kind = SBX__MP_UINT; return sbx__mp_be(mp, 2, &item->value);
    case 0xce: item->kind = SBX__MP_UINT; return sbx__mp_be(mp, 4, &item->value);
    case 0xcf: item->kind = SBX__MP_UINT; return sbx__mp_be(mp, 8, &item->value);
    case 0xd9: item->kind = SBX__MP_STR; if (sbx__mp_be(mp, 1, &n) != 0) return -1; break;
    case 0xda: item->kind = SBX__MP_STR; if (sbx__mp_be(mp, 2, &n) != 0) return -1; break;
    case 0xdc: item->kind = SBX__MP_ARRAY; if (sbx__mp_be(mp, 2, &n) != 0) return -1; break;
    case 0xde: item->kind = SBX__MP_MAP; if (sbx__mp_be(mp, 2, &n) != 0) return -1; break;
    default:
      if (type >= 0xa0 && type <= 0xbf) {
        item->kind = SBX__MP_STR;
        n = type & 0x1fu;
      } else if (type >= 0x90 && type <= 0x9f) {
        item->kind = SBX__MP_ARRAY;
        n = type & 0x0fu;
      } else if (type >= 0x80 && type <= 0x8f) {
        item->kind = SBX__MP_MAP;
        n = type & 0x0fu;
      } else {
        return sbx__fail("fork request: msgpack type %#04x at byte %zu is not one this reader"
                         " takes (nil, unsigned int, str, array, map)", type, where);
      }
  }
  if (item->kind == SBX__MP_STR) {
    if (n > mp->left) {
      return sbx__fail("fork request: a string of %llu bytes at byte %zu, only %zu left",
                       (unsigned long long)n, where, mp->left);
    }
    item->str = (const char *)mp->at;
    item->length = (size_t)n;
    mp->at += n;
    mp->left -= (size_t)n;
    return 0;
  }
  /* An array or a map: each element needs at least one byte. */
  if (n > mp->left || (item->kind == SBX__MP_MAP && n > mp->left / 2)) {
    return sbx__fail("fork request: %s with an element count of %llu at byte %zu, but only %zu"
                     " bytes left",
                     item->kind == SBX__MP_MAP ? "a map" : "an array", (unsigned long long)n,
                     where, mp->left);
  }
  item->value = n;
  return 0;
}

/* Skips the rest of `item` (the elements of an array or a map). */
static inline int sbx__mp_skip(struct sbx__mp *mp, const struct sbx__mp_item *item, int depth) {
  uint64_t elements;
  struct sbx__mp_item inner;
  if (item->kind != SBX__MP_ARRAY && item->kind != SBX__MP_MAP) return 0;
  if (depth >= SBX_FORK_MAX_DEPTH) {
    return sbx__fail("fork request: values nested more than %d deep", SBX_FORK_MAX_DEPTH);
  }
  elements = item->kind == SBX__MP_MAP ? 2 * item->value : item->value;
  for (uint64_t i = 0; i < elements; i++) {
    if (sbx__mp_next(mp, &inner) != 0 || sbx__mp_skip(mp, &inner, depth + 1) != 0) return -1;
  }
  return 0;
}

static inline int sbx__mp_expect(struct sbx__mp *mp, struct sbx__mp_item *item,
                                 enum sbx__mp_kind kind, const char *what) {
  if (sbx__mp_next(mp, item) != 0) return -1;
  if (item->kind != kind) {
    return sbx__fail("fork request: %s must be %s, not %s", what, sbx__mp_kind_name(kind),
                     sbx__mp_kind_name(item->kind));
  }
  return 0;
}

static inline int sbx__parse_targets(struct sbx__mp *mp, struct sbx_fork_request *out) {
  struct sbx__mp_item item;
  if (sbx__mp_next(mp, &item) != 0) return -1;
  if (item.kind != SBX__MP_ARRAY || item.value > SBX_FORK_MAX_FDS) {
    return sbx__fail("fork request: 'fds' must be an array of at most %d fd numbers",
                     SBX_FORK_MAX_FDS);
  }
  out->target_count = (size_t)item.value;
  for (size_t i = 0; i < out->target_count; i++) {
    struct sbx__mp_item fd;
    if (sbx__mp_expect(mp, &fd, SBX__MP_UINT, "an entry of 'fds'") != 0) return -1;
    if (fd.value >= SBX_FORK_FD_LIMIT || fd.value == SBX_COMMS_FD) {
      return sbx__fail("fork request: %llu is not an fd number a child can take",
                       (unsigned long long)fd.value);
    }
    out->targets[i] = (int)fd.value;
    /* Quadratic, but over at most 4096 small ints: a few milliseconds at worst. */
    for (size_t j = 0; j < i; j++) {
      if (out->targets[j] == out->targets[i]) {
        return sbx__fail("fork request: fd %d appears twice in 'fds'", out->targets[i]);
      }
    }
  }
  return 0;
}

/* Whether a str item is an absolute path that fits SBX_PATH_MAX with its
 * terminator.  The bytes go to the kernel as they are: it takes paths as
 * bytes, so they are not checked for UTF-8. */
static inline bool sbx__mp_is_path(const struct sbx__mp_item *item) {
  return item->kind == SBX__MP_STR && item->length > 0 && item->str[0] == '/' &&
         memchr(item->str, '\0', item->length) == NULL && item->length < SBX_PATH_MAX;
}

static inline int sbx__parse_cwd(struct sbx__mp *mp, struct sbx_fork_request *out) {
  struct sbx__mp_item item;
  if (sbx__mp_next(mp, &item) != 0) return -1;
  if (item.kind == SBX__MP_NIL) return 0;
  if (!sbx__mp_is_path(&item)) {
    return sbx__fail("fork request: 'cwd' must be nil or an absolute path shorter than %d bytes",
                     SBX_PATH_MAX);
  }
  memcpy(out->cwd, item.str, item.length);
  out->cwd[item.length] = '\0';
  out->has_cwd = true;
  return 0;
}

static inline int sbx__parse_proc(struct sbx__mp *mp, struct sbx_fork_request *out) {
  struct sbx__mp_item item;
  if (sbx__mp_next(mp, &item) != 0) return -1;
  if (item.kind != SBX__MP_ARRAY || item.value > SBX_FORK_MAX_PROCS) {
    return sbx__fail("fork request: 'proc' must be an array of at most %d absolute paths",
                     SBX_FORK_MAX_PROCS);
  }
  out->proc_count = (size_t)item.value;
  for (size_t i = 0; i < out->proc_count; i++) {
    struct sbx__mp_item path;
    if (sbx__mp_next(mp, &path) != 0) return -1;
    if (!sbx__mp_is_path(&path)) {
      return sbx__fail("fork request: entry %zu of 'proc' is not an absolute path shorter than"
                       " %d bytes", i, SBX_PATH_MAX);
    }
    memcpy(out->proc[i], path.str, path.length);
    out->proc[i][path.length] = '\0';
  }
  return 0;
}

static inline int sbx__parse_rlimits(struct sbx__mp *mp, struct sbx_fork_request *out) {
  struct sbx__mp_item item;
  if (sbx__mp_next(mp, &item) != 0) return -1;
  if (item.kind != SBX__MP_ARRAY || item.value > SBX_FORK_MAX_RLIMITS) {
    return sbx__fail("fork request: 'rlimits' must be an array of at most %d"
                     " [resource, soft, hard]", SBX_FORK_MAX_RLIMITS);
  }
  out->rlimit_count = (size_t)item.value;
  for (size_t i = 0; i < out->rlimit_count; i++) {
    struct sbx__mp_item entry, resource, soft, hard;
    if (sbx__mp_next(mp, &entry) != 0) return -1;
    if (entry.kind != SBX__MP_ARRAY || entry.value != 3) {
      return sbx__fail("fork request: rlimit %zu is not a [resource, soft, hard] array", i);
    }
    if (sbx__mp_expect(mp, &resource, SBX__MP_UINT, "an rlimit's resource") != 0 ||
        sbx__mp_expect(mp, &soft, SBX__MP_UINT, "an rlimit's soft limit") != 0 ||
        sbx__mp_expect(mp, &hard, SBX__MP_UINT, "an rlimit's hard limit") != 0) {
      return -1;
    }
    if (resource.value >= SBX_FORK_MAX_RLIMITS || soft.value > hard.value) {
      return sbx__fail("fork request: [%llu, %llu, %llu] is not a [resource, soft, hard] limit",
                       (unsigned long long)resource.value, (unsigned long long)soft.value,
                       (unsigned long long)hard.value);
    }
    out->rlimits[i].resource = (int)resource.value;
    out->rlimits[i].soft = soft.value;
    out->rlimits[i].hard = hard.value;
  }
  return 0;
}

/* Decodes and checks the msgpack payload of a TAG_FORK_REQUEST frame
 * (docs/protocol.md) into `*out`: the pure core of sbx_wait_and_fork(), which
 * calls it before it forks or receives a single fd.  Keys it does not know
 * are skipped (a newer supervisor may add some); a key given twice, a
 * missing 'fds', trailing bytes or any type outside the reader's set fail.
 * Returns 0, or -1 with sbx_last_error() saying why. */
static inline int sbx__parse_fork_request(const void *payload, size_t size,
                                          struct sbx_fork_request *out) {
  struct sbx__mp mp;
  struct sbx__mp_item map;
  bool seen_fds = false, seen_cwd = false, seen_rlimits = false, seen_proc = false;
  mp.start = mp.at = (const unsigned char *)payload;
  mp.left = size;
  out->target_count = 0;
  out->has_cwd = false;
  out->cwd[0] = '\0';
  out->rlimit_count = 0;
  out->proc_count = 0;
  if (sbx__mp_next(&mp, &map) != 0) return -1;
  if (map.kind != SBX__MP_MAP) {
    return sbx__fail("fork request: expected a map with 'fds', 'cwd' and 'rlimits', not %s",
                     sbx__mp_kind_name(map.kind));
  }
  for (uint64_t i = 0; i < map.value; i++) {
    struct sbx__mp_item key;
    bool *seen = NULL;
    int rc;
    if (sbx__mp_expect(&mp, &key, SBX__MP_STR, "a key") != 0) return -1;
    if (key.length == 3 && memcmp(key.str, "fds", 3) == 0) {
      seen = &seen_fds;
    } else if (key.length == 3 && memcmp(key.str, "cwd", 3) == 0) {
      seen = &seen_cwd;
    } else if (key.length == 7 && memcmp(key.str, "rlimits", 7) == 0) {
      seen = &seen_rlimits;
    } else if (key.length == 4 && memcmp(key.str, "proc", 4) == 0) {
      seen = &seen_proc;
    } else {
      struct sbx__mp_item value;
      if (sbx__mp_next(&mp, &value) != 0 || sbx__mp_skip(&mp, &value, 1) != 0) return -1;
      continue;
    }
    if (*seen) {
      return sbx__fail("fork request: the key '%.*s' appears twice", (int)key.length, key.str);
    }
    *seen = true;
    rc = seen == &seen_fds       ? sbx__parse_targets(&mp, out)
         : seen == &seen_cwd     ? sbx__parse_cwd(&mp, out)
         : seen == &seen_rlimits ? sbx__parse_rlimits(&mp, out)
                                 : sbx__parse_proc(&mp, out);
    if (rc != 0) return -1;
  }
  if (mp.left != 0) {
    return sbx__fail("fork request: trailing bytes after the map (%zu)", mp.left);
  }
  if (!seen_fds) return sbx__fail("fork request: no 'fds' in the map");
  return 0;
}

/* -- the fork server's side -- */

/* How many threads this process has, from /proc/self/task; -1 without /proc
 * (a sandbox's mount tree usually has none).  getdents64 into a buffer on the
 * stack: opendir() would allocate. */
static inline long sbx__count_threads(void) {
  union {
    uint64_t align;
    unsigned char bytes[2048];
  } buffer;
  long count = 0;
  int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -1;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buffer.bytes, sizeof buffer.bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(dir);
      return n == 0 ? count : -1;
    }
    /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name. */
    for (long at = 0; at + 19 < n;) {
      unsigned short reclen;
      const char *name = (const char *)buffer.bytes + at + 19;
      memcpy(&reclen, buffer.bytes + at + 16, sizeof reclen);
      if (reclen == 0) break;
      if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) count++;
      at += reclen;
    }
  }
}

/* 1 if this process is single-threaded, 0 if not, -1 if the kernel would not
 * say.  unshare(2): CLONE_THREAD alone does nothing in a single-threaded
 * process and fails with EINVAL in a multithreaded one -- a check that needs
 * no /proc. */
static inline int sbx__single_threaded_by_unshare(void) {
  if (syscall(SYS_unshare, SBX__CLONE_THREAD) == 0) return 1;
  return errno == EINVAL ? 0 : -1;
}

/* A fork copies only the calling thread, and the monitor of each child could
 * not watch the others: the fork server must be single-threaded. */
static inline int sbx__check_single_threaded(void) {
  long threads = sbx__count_threads();
  if (threads == 1) return 0;
  if (threads > 1) {
    return sbx__fail("wait_and_fork: needs a single-threaded process; %ld threads run", threads);
  }
  switch (sbx__single_threaded_by_unshare()) {
    case 1: return 0;
    case 0: return sbx__fail("wait_and_fork: needs a single-threaded process; other threads run");
    default:
      return sbx__fail("wait_and_fork: cannot tell whether other threads run (no /proc/self/task,"
                       " and unshare(CLONE_THREAD) failed: %s)", strerror(errno));
  }
}

/* 1 once the supervisor has closed the channel between two frames, 0 when
 * the next frame has begun to arrive, -1 on an error.  A one-byte peek tells
 * the orderly end of the fork server's work from a frame cut short. */
static inline int sbx__wait_for_request(void) {
  unsigned char byte;
  for (;;) {
    ssize_t n = recv(SBX_COMMS_FD, &byte, 1, MSG_PEEK);
    if (n == 1) return 0;
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      /* A non-blocking channel: wait as a blocking one would. */
      struct pollfd readable = {SBX_COMMS_FD, POLLIN, 0};
      if (poll(&readable, 1, -1) >= 0 || errno == EINTR) continue;
    }
    return sbx__break("wait_and_fork: waiting for a request failed: %s", strerror(errno));
  }
}

/* A close-on-exec duplicate of `fd` at the lowest free number that is none of
 * `avoid[0..count)`.  A duplicate that lands on such a number is kept open in
 * `blockers` (so the next search does not land there again) until the caller
 * closes them all.  Never above the lowest free numbers: the fd limit may be
 * 1024 with 1023 among the targets, so "above every number in play" would
 * not fit. */
static inline int sbx__dup_away(int fd, const int *avoid, size_t count, int *blockers,
                                size_t *blocked) {
  int from = 0;
  for (;;) {
    bool taken = false;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, from);
    if (copy < 0) {
      return sbx__fail("wait_and_fork: no free fd number for fd %d: %s", fd, strerror(errno));
    }
    for (size_t i = 0; i < count && !taken; i++) taken = avoid[i] == copy;
    if (!taken) return copy;
    blockers[(*blocked)++] = copy; /* each target number is blocked at most once */
    from = copy + 1;
  }
}

/* Puts each fds[i] at targets[i] (inheritable, as an exec'd sandboxee's fds
 * are) and closes the originals; fds[] then holds the targets.  Every fd
 * first moves to a number that is no target, so no dup2() below can clobber
 * a source that has yet to move.  That needs as many free numbers outside the
 * targets as there are fds, below the fd limit: about 500 fds under the
 * limit of 1024.  On failure the fds are left in no useful order: the
 * caller, a child, gives up. */
static inline int sbx__arrange_fds(int *fds, const int *targets, size_t count) {
  static int blockers[1 + SBX_FORK_MAX_FDS];
  size_t blocked = 0;
  int rc = 0;
  size_t moved = 0;
  for (; moved < count; moved++) {
    int copy = sbx__dup_away(fds[moved], targets, count, blockers, &blocked);
    if (copy < 0) {
      rc = -1;
      break;
    }
    close(fds[moved]);
    fds[moved] = copy;
  }
  for (size_t i = 0; i < blocked; i++) close(blockers[i]);
  if (rc != 0) return -1;
  for (size_t i = 0; i < count; i++) {
    if (dup2(fds[i], targets[i]) < 0) {
      return sbx__fail("wait_and_fork: cannot put an fd at %d: %s", targets[i], strerror(errno));
    }
    close(fds[i]);
    fds[i] = targets[i];
  }
  return 0;
}

/* Sets a limit, clamped to the current hard limit, which an unprivileged
 * process cannot raise: the stricter limit stays, as in the fork server of
 * mode (a).  Values from 2^63 up mean unlimited, as on the wire. */
static inline int sbx__set_rlimit(int resource, uint64_t soft, uint64_t hard) {
  struct rlimit limit;
  if (getrlimit(resource, &limit) != 0) {
    return sbx__fail("wait_and_fork: cannot read rlimit %d: %s", resource, strerror(errno));
  }
  if (limit.rlim_max != RLIM_INFINITY && hard > (uint64_t)limit.rlim_max) {
    hard = (uint64_t)limit.rlim_max;
    if (soft > hard) soft = hard;
  }
  limit.rlim_cur = soft >= (UINT64_C(1) << 63) ? RLIM_INFINITY : (rlim_t)soft;
  limit.rlim_max = hard >= (UINT64_C(1) << 63) ? RLIM_INFINITY : (rlim_t)hard;
  if (setrlimit(resource, &limit) != 0) {
    return sbx__fail("wait_and_fork: cannot set rlimit %d: %s", resource, strerror(errno));
  }
  return 0;
}

static inline void sbx__child_failed(const char *why) {
  char line[SBX__ERROR_SIZE + 64];
  int n = snprintf(line, sizeof line, "aiosandbox: a forked child could not start: %s\n", why);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
  (void)!write(STDERR_FILENO, line, (size_t)n);
  _exit(SBX_EXIT_CHILD_SETUP_FAILED);
}

/* -- the child's namespaces (docs/design.md, "Mode (c)") --
 *
 * Each child runs in user, pid, ipc and mount namespaces of its own, nested
 * in the fork server's, below a small init that is pid 1 there: the child
 * sees neither its siblings nor the fork server, and the supervisor ends the
 * whole run by killing the init.  Kernel facts these functions rely on are
 * in aiosandbox/client/_isolation.py, the Python client's twin of this code. */

/* Clones the child's init into new user, pid and ipc namespaces, and a mount
 * namespace if a procfs is to be covered: a raw clone, so no fork handler
 * runs, which is fine in a single-threaded process whose clone runs only
 * sbx__fork_from_init() before its own fork().  Returns the init's pid, 0 in
 * the init, -1 on failure. */
static inline long sbx__clone_init(bool cover_proc) {
  long flags = SBX__CLONE_NEWUSER | SBX__CLONE_NEWPID | SBX__CLONE_NEWIPC;
  if (cover_proc) flags |= SBX__CLONE_NEWNS;
  return syscall(SYS_clone, flags | SIGCHLD, 0L, 0L, 0L, 0L);
}

static inline int sbx__write_file(int dir, const char *path, const char *data) {
  size_t length = strlen(data);
  int fd = openat(dir, path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, length);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)length ? 0 : -1;
}

/* Maps our uid and gid (those of the parent namespace) to themselves in the
 * new user namespace, through the fork server's procfs at SBX_PROCFS_FD (or
 * /proc without it), which is then closed: a child may map its own ids only.
 * The files of a non-dumpable process belong to root: dumpable while they
 * are written. */
static inline int sbx__map_own_ids(uid_t uid, gid_t gid) {
  char line[64];
  struct stat st;
  int dir = AT_FDCWD, rc = 0;
  const char *what = "setgroups";
  char setgroups[32], uid_map[32], gid_map[32];
  const char *base = "/proc/self/";
  if (fstat(SBX_PROCFS_FD, &st) == 0 && S_ISDIR(st.st_mode)) {
    dir = SBX_PROCFS_FD;
    base = "self/";
  }
  snprintf(setgroups, sizeof setgroups, "%ssetgroups", base);
  snprintf(uid_map, sizeof uid_map, "%suid_map", base);
  snprintf(gid_map, sizeof gid_map, "%sgid_map", base);
  (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  /* No setgroups file before Linux 3.19, and no need of one. */
  if (sbx__write_file(dir, setgroups, "deny") != 0 && errno != ENOENT) rc = -1;
  if (rc == 0) {
    what = "uid_map";
    snprintf(line, sizeof line, "%lu %lu 1", (unsigned long)uid, (unsigned long)uid);
    rc = sbx__write_file(dir, uid_map, line);
  }
  if (rc == 0) {
    what = "gid_map";
    snprintf(line, sizeof line, "%lu %lu 1", (unsigned long)gid, (unsigned long)gid);
    rc = sbx__write_file(dir, gid_map, line);
  }
  int saved = errno;
  (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (dir != AT_FDCWD) close(dir);
  if (rc != 0) {
    return sbx__fail("wait_and_fork: cannot write the child's %s: %s", what, strerror(saved));
  }
  return 0;
}

/* Covers the procfs at `target` with one of our pid namespace: read-only,
 * nosuid, nodev, noexec, as the policy's procfs is (the kernel asks for its
 * flags at least).  mount(2) by number: sys/mount.h clashes with the
 * linux/mount.h a program may include. */
static inline int sbx__mount_proc(const char *target) {
  unsigned long flags = 1 /* MS_RDONLY */ | 2 /* MS_NOSUID */ | 4 /* MS_NODEV */ | 8 /* MS_NOEXEC */;
  if (syscall(SYS_mount, "proc", target, "proc", flags, NULL) != 0) {
    return sbx__fail("wait_and_fork: cannot mount a procfs at %s: %s", target, strerror(errno));
  }
  return 0;
}

/* Gives up every capability the new user namespace gave us, also for later
 * execs: the sets are emptied, and the secure bits (SECBIT_NOROOT and
 * SECBIT_NO_SETUID_FIXUP, locked) keep an exec as uid 0 from filling them
 * again.  File capabilities are no way back either: every mount of a sandbox
 * is nosuid (and no_new_privs follows in sbx_sandbox_me_here()). */
static inline int sbx__drop_capabilities(void) {
  struct {
    uint32_t version;
    int pid;
  } header = {0x20080522u /* _LINUX_CAPABILITY_VERSION_3 */, 0};
  struct {
    uint32_t effective, permitted, inheritable;
  } none[2];
  memset(none, 0, sizeof none);
  if (prctl(PR_SET_SECUREBITS, 0x01 | 0x02 | 0x04 | 0x08, 0, 0, 0) != 0) {
    return sbx__fail("wait_and_fork: prctl(PR_SET_SECUREBITS) failed: %s", strerror(errno));
  }
  if (syscall(SYS_capset, &header, none) != 0) {
    return sbx__fail("wait_and_fork: capset() failed: %s", strerror(errno));
  }
  return 0;
}

/* The init's life once it has forked `child`: it keeps no fd (the child's
 * pipes must see EOF when the child ends), reaps, and exits with the child's
 * status (128 + the signal if a signal ended it). */
static inline void sbx__serve_as_init(pid_t child) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 0U, ~0U, 0U) != 0)
#endif
  {
    struct rlimit files;
    int top = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_max < (1 << 20)
                  ? (int)files.rlim_max
                  : 1 << 20;
    for (int fd = 0; fd < top; fd++) close(fd);
  }
  (void)prctl(PR_SET_NAME, "aiosandbox-init", 0, 0, 0);
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) _exit(0);
    if (pid == child) _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
}

/* Step 2 in the child's init, pid 1 of the new namespaces, a copy of the
 * fork server that does as little as it can: it blocks every signal for
 * good (an init gets no signal from inside its namespace that it has no
 * handler for, and a blocked one is never delivered: the fork server's
 * handlers stay out of reach), forks the child, and reaps.  Returns only in
 * the child. */
static inline void sbx__fork_from_init(void) {
  struct sigaction dfl;
  sigset_t all;
  pid_t child;
  sigfillset(&all);
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL; /* to learn how the child ends */
  sigemptyset(&dfl.sa_mask);
  if (sigprocmask(SIG_BLOCK, &all, NULL) != 0 || sigaction(SIGCHLD, &dfl, NULL) != 0) {
    _exit(SBX_EXIT_INIT_FAILED);
  }
  child = fork();
  if (child < 0) _exit(SBX_EXIT_INIT_FAILED);
  if (child > 0) sbx__serve_as_init(child);
}

/* Step 3 in the child, pid 2 of its namespaces: its id maps, the procfs
 * mounts and no capabilities (it has every one of the new user namespace
 * until then), its own session, default signals, non-dumpable, its fds,
 * limits and cwd, then TAG_CREDS and the wait for TAG_FORK_GO.  Returns only
 * once the supervisor traces it; exits 125 on any failure. */
static inline void sbx__become_child(const struct sbx_fork_request *request, int *fds, uid_t uid,
                                     gid_t gid) {
  static int targets[1 + SBX_FORK_MAX_FDS];
  struct sigaction dfl;
  sigset_t none;
  if (sbx__map_own_ids(uid, gid) != 0) sbx__child_failed(sbx_last_error());
  for (size_t i = 0; i < request->proc_count; i++) {
    if (sbx__mount_proc(request->proc[i]) != 0) sbx__child_failed(sbx_last_error());
  }
  if (sbx__drop_capabilities() != 0) sbx__child_failed(sbx_last_error());
  /* Its own process group: the monitor waits on the sandboxee's group. */
  if (setsid() < 0) sbx__child_failed("setsid() failed");
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigemptyset(&none);
  if (sigaction(SIGCHLD, &dfl, NULL) != 0 || sigprocmask(SIG_SETMASK, &none, NULL) != 0) {
    sbx__child_failed("cannot reset the signals");
  }
  (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  /* The child's channel goes to 1023, where it replaces the fork server's. */
  targets[0] = SBX_COMMS_FD;
  memcpy(targets + 1, request->targets, request->target_count * sizeof targets[0]);
  if (sbx__arrange_fds(fds, targets, 1 + request->target_count) != 0) {
    sbx__child_failed(sbx_last_error());
  }
  for (size_t i = 0; i < request->rlimit_count; i++) {
    if (sbx__set_rlimit(request->rlimits[i].resource, request->rlimits[i].soft,
                        request->rlimits[i].hard) != 0) {
      sbx__child_failed(sbx_last_error());
    }
  }
  if (request->has_cwd && chdir(request->cwd) != 0) {
    char message[64 + SBX_PATH_MAX];
    snprintf(message, sizeof message, "chdir(%s) failed: %s", request->cwd, strerror(errno));
    sbx__child_failed(message);
  }
  /* unix(7), SO_PASSCRED: the supervisor's end has it set, so the kernel
   * attaches our pid to this frame, translated into the supervisor's pid
   * namespace -- which is how it learns whom to trace (and, as our parent,
   * our init). */
  if (sbx__send_frame(SBX_TAG_CREDS, NULL, 0) != 0 ||
      sbx__recv_fixed(SBX_TAG_FORK_GO, NULL, 0) != 0) {
    sbx__child_failed(sbx_last_error());
  }
}

/* Marks the channel broken after a failure in the middle of a request: the
 * fd frames that follow can no longer be counted, so no later request could
 * be read in step. */
static inline int sbx__out_of_step(void) {
  *sbx__broken() = true;
  return -1;
}

/* Mode (c) of the Sandbox2 guide, in a custom fork server: waits for the
 * supervisor's next fork request on fd 1023 and forks (docs/protocol.md):
 *
 *   for (;;) {
 *     int pid = sbx_wait_and_fork();
 *     if (pid == 0) break;               // the child: go and get sandboxed
 *     if (pid < 0) { fprintf(stderr, "%s\n", sbx_last_error()); return 1; }
 *   }
 *   if (sbx_sandbox_me_here() != 0) ...
 *
 * Returns, in the fork server, the pid of the child's init (call again for
 * the next request): the child runs in user, pid, ipc and mount namespaces
 * of its own, as pid 2 below that init, which exits with the child's status.
 * Returns 0 in the child, once the supervisor traces it: its channel is now
 * fd 1023, each mapped fd is at its target, its rlimits (no higher than the
 * fork server's hard limits) and cwd are set, it leads its own session,
 * SIGCHLD is back to SIG_DFL and no signal is blocked, it has no capability
 * and is not dumpable; it must go on to sbx_sandbox_me_here().  A child that
 * cannot set itself up writes why to stderr (the fork server's, if its fds
 * are not in place yet) and exits with status 125.
 *
 * Exits the fork server with status 0 (exit(), so atexit handlers run) once
 * the supervisor closes the channel.  Returns -1 (see sbx_last_error()) if
 * other threads run (counted in /proc/self/task, or without /proc asked of
 * the kernel with unshare(CLONE_THREAD); if neither answers, -1 too), if
 * fork() fails, or if the supervisor breaks the protocol -- a request that
 * is not a map of the documented shape, a frame of another kind, a channel
 * that fails: the channel is then broken and every later call fails too.
 *
 * The fork server ignores SIGCHLD and is not dumpable from its first call
 * on: the kernel reaps the inits, and no child can read its memory.
 * stdio buffers are flushed before each fork, or each child would write
 * again what the fork server had buffered.  Nothing is allocated; the
 * request and its fds live in static storage (about 200 KiB). */
SBX_MUST_CHECK
static inline int sbx_wait_and_fork(void) {
  static unsigned char payload[SBX_FORK_REQUEST_MAX];
  static struct sbx_fork_request request;
  static int fds[1 + SBX_FORK_MAX_FDS];
  static bool serving = false;
  uint64_t length;
  size_t count = 0;
  long pid;
  uid_t uid;
  gid_t gid;
  if (sbx__check_channel() != 0 || sbx__check_single_threaded() != 0) return -1;
  if (!serving) {
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGCHLD, &ignore, NULL) != 0) {
      return sbx__fail("wait_and_fork: cannot ignore SIGCHLD: %s", strerror(errno));
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
      return sbx__fail("wait_and_fork: prctl(PR_SET_DUMPABLE) failed: %s", strerror(errno));
    }
    serving = true;
  }
  switch (sbx__wait_for_request()) {
    case 1: exit(0);
    case 0: break;
    default: return -1;
  }
  if (sbx__recv_variable(SBX_TAG_FORK_REQUEST, payload, sizeof payload, &length) != 0 ||
      sbx__parse_fork_request(payload, (size_t)length, &request) != 0) {
    return sbx__out_of_step();
  }
  for (; count < 1 + request.target_count; count++) {
    if (sbx_recv_fd(&fds[count]) != 0) {
      while (count > 0) close(fds[--count]);
      return sbx__out_of_step();
    }
  }
  fflush(NULL);
  uid = geteuid();
  gid = getegid();
  pid = sbx__clone_init(request.proc_count > 0);
  if (pid != 0) {
    int saved = errno;
    for (size_t i = 0; i < count; i++) close(fds[i]);
    if (pid < 0) {
      return sbx__fail("wait_and_fork: clone() into new namespaces failed: %s",
                       strerror(saved));
    }
    return (int)pid;
  }
  sbx__fork_from_init();
  sbx__become_child(&request, fds, uid, gid);
  return 0;
}

#endif /* AIOSANDBOX_H */
