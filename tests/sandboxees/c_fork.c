/* A test driver for the mode (c) half of aiosandbox.h, run without a supervisor.
 *
 *   c_fork parse            fork request payloads on stdin, each a uint32 (LE) length then
 *                           its bytes; one line per payload on stdout:
 *                             "ok TARGETS CWD RLIMITS PROC"  TARGETS "3,4", CWD in hex,
 *                                                       RLIMITS "res:soft:hard,...", PROC
 *                                                       "hex,hex" ("-" if none)
 *                             "error MESSAGE"
 *   c_fork arrange S:T ...  under RLIMIT_NOFILE 1024, puts a distinct pipe at each S, moves
 *                           them with the header's fd arrangement, and checks that each T
 *                           holds its pipe (inheritable) and no other fd from 3 up is open;
 *                           prints "ok" or "error MESSAGE"
 *   c_fork threads          the thread checks with one thread, then with two, then
 *                           sbx_wait_and_fork() with two ("refused: WHY")
 *   c_fork serve FD         FD becomes the channel at 1023; loops on sbx_wait_and_fork().
 *                           Each child sends its pid (int64), its cwd (string), what its fd 5
 *                           holds (bytes, up to 64) and exits 0.  A failing call prints
 *                           "error MESSAGE" and exits 3.
 */
#include "aiosandbox.h"

#include <pthread.h>
#include <sys/stat.h>

static unsigned char payload[SBX_FORK_REQUEST_MAX];
static struct sbx_fork_request request;

static int read_exactly(void *data, size_t size) {
  return size == 0 || fread(data, 1, size, stdin) == size;
}

static void print_request(const struct sbx_fork_request *r) {
  printf("ok ");
  for (size_t i = 0; i < r->target_count; i++) printf("%s%d", i ? "," : "", r->targets[i]);
  printf("%s ", r->target_count ? "" : "-");
  for (const char *c = r->cwd; *c; c++) printf("%02x", (unsigned char)*c);
  printf("%s ", r->has_cwd ? "" : "-");
  for (size_t i = 0; i < r->rlimit_count; i++) {
    printf("%s%d:%llu:%llu", i ? "," : "", r->rlimits[i].resource,
           (unsigned long long)r->rlimits[i].soft, (unsigned long long)r->rlimits[i].hard);
  }
  printf("%s ", r->rlimit_count ? "" : "-");
  for (size_t i = 0; i < r->proc_count; i++) {
    printf("%s", i ? "," : "");
    for (const char *c = r->proc[i]; *c; c++) printf("%02x", (unsigned char)*c);
  }
  printf("%s\n", r->proc_count ? "" : "-");
}

static int parse(void) {
  unsigned char le[4];
  while (read_exactly(le, sizeof le) && !feof(stdin)) {
    size_t size = (size_t)le[0] | (size_t)le[1] << 8 | (size_t)le[2] << 16 | (size_t)le[3] << 24;
    if (size > sizeof payload || !read_exactly(payload, size)) return 2;
    /* A copy of exactly its size, so that AddressSanitizer sees a read past its end. */
    unsigned char *copy = malloc(size ? size : 1);
    if (copy == NULL) return 2;
    memcpy(copy, payload, size);
    if (sbx__parse_fork_request(copy, size, &request) == 0) {
      print_request(&request);
    } else {
      printf("error %s\n", sbx_last_error());
    }
    free(copy);
  }
  return 0;
}

static int arrange(int argc, char **argv) {
  static int sources[1024], targets[1024];
  static ino_t inodes[1024];
  struct rlimit limit = {1024, 1024};
  size_t count = 0;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 2;
  for (int fd = 3; fd < 1024; fd++) close(fd); /* whatever the caller left us */
  for (int i = 2; i < argc && count < 1024; i++, count++) {
    int p[2];
    struct stat st;
    if (sscanf(argv[i], "%d:%d", &sources[count], &targets[count]) != 2) return 2;
    if (pipe(p) != 0) return 2;
    if (p[0] != sources[count] && dup2(p[0], sources[count]) < 0) return 2;
    if (p[0] != sources[count]) close(p[0]);
    if (p[1] != sources[count]) close(p[1]);
    if (fstat(sources[count], &st) != 0) return 2;
    inodes[count] = st.st_ino;
  }
  if (sbx__arrange_fds(sources, targets, count) != 0) {
    printf("error %s\n", sbx_last_error());
    return 0;
  }
  for (size_t i = 0; i < count; i++) {
    struct stat st;
    if (fstat(targets[i], &st) != 0 || st.st_ino != inodes[i]) {
      printf("error fd %d does not hold its pipe\n", targets[i]);
      return 0;
    }
    if (fcntl(targets[i], F_GETFD) != 0) {
      printf("error fd %d is close-on-exec\n", targets[i]);
      return 0;
    }
  }
  for (int fd = 3; fd < 1024; fd++) {
    bool target = false;
    for (size_t i = 0; i < count; i++) target = target || targets[i] == fd;
    if (!target && fcntl(fd, F_GETFD) != -1) {
      printf("error fd %d was left open\n", fd);
      return 0;
    }
  }
  printf("ok\n");
  return 0;
}

static void *idle(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

static void print_threads(void) {
  int checked = sbx__check_single_threaded();
  printf("proc=%ld unshare=%d check=%s\n", sbx__count_threads(),
         sbx__single_threaded_by_unshare(), checked == 0 ? "ok" : sbx_last_error());
}

static int threads(void) {
  pthread_t thread;
  print_threads();
  if (pthread_create(&thread, NULL, idle, NULL) != 0) return 2;
  print_threads();
  if (sbx_wait_and_fork() != -1) return 2;
  printf("refused: %s\n", sbx_last_error());
  return 0;
}

static int serve(const char *fd_text) {
  int fd = atoi(fd_text);
  if (dup2(fd, SBX_COMMS_FD) < 0) return 2;
  close(fd);
  for (;;) {
    int pid = sbx_wait_and_fork();
    if (pid < 0) {
      printf("error %s\n", sbx_last_error());
      return 3;
    }
    if (pid == 0) break;
  }
  char cwd[256], data[64];
  ssize_t n = read(5, data, sizeof data);
  if (getcwd(cwd, sizeof cwd) == NULL) return 4;
  if (sbx_send_int64(getpid()) != 0 || sbx_send_string(cwd) != 0 ||
      sbx_send_bytes(data, n < 0 ? 0 : (size_t)n) != 0) {
    return 5;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "parse")) return parse();
  if (!strcmp(mode, "arrange")) return arrange(argc, argv);
  if (!strcmp(mode, "threads")) return threads();
  if (!strcmp(mode, "serve") && argc > 2) return serve(argv[2]);
  fprintf(stderr, "usage: c_fork parse|arrange S:T...|threads|serve FD\n");
  return 64;
}
