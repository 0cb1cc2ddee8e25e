/* The hostile sandboxee of tests/sandbox/test_execmem.py: `execmem ROUTE [ARGS]` tries one way of
 * running native code it wrote itself -- of making memory it can write executable.
 *
 * Each route writes a tiny function that returns RAN (77) into memory, makes that memory
 * executable the route's way, and calls it: exit code 77 means the code ran, which a
 * sandbox must never let happen. A refused syscall ends the run as a VIOLATION, or fails,
 * and the route exits with its errno (a harmless end). 100+ is an unexpected state.
 *
 * Syscalls are made with syscall(2), so each route makes the very syscalls its name says.
 * Built dynamic: its loader is the one the policies under test must keep working. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RAN 77
#define PAGE 4096
#define CALL(...) syscall(__VA_ARGS__)

/* return 77 */
#if defined(__x86_64__)
static const unsigned char code[] = {0xb8, RAN, 0, 0, 0, 0xc3}; /* mov eax, 77; ret */
#elif defined(__aarch64__)
static const uint32_t code[] = {0x52800000 | (RAN << 5), 0xd65f03c0}; /* mov w0, 77; ret */
#else
#error "execmem.c knows the code of x86-64 and aarch64 only"
#endif

static int fail(int code) { return code ? code : 100; }

/* Call the function at p (its instruction cache made coherent first, for aarch64). */
static int run(void *p) {
  __builtin___clear_cache((char *)p, (char *)p + sizeof code);
  return ((int (*)(void))p)();
}

static void *anonymous(int prot) {
  return (void *)CALL(SYS_mmap, NULL, PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

/* mprotect: write to anonymous memory, then make it PROT_READ|PROT_EXEC */
static int r_mprotect(int argc, char **argv) {
  void *p = anonymous(PROT_READ | PROT_WRITE);
  if (p == MAP_FAILED) return fail(errno);
  memcpy(p, code, sizeof code);
  if (CALL(SYS_mprotect, p, PAGE, PROT_READ | PROT_EXEC) != 0) return fail(errno);
  return run(p);
}

/* pkey_mprotect: the same with pkey_mprotect and no protection key */
static int r_pkey_mprotect(int argc, char **argv) {
  void *p = anonymous(PROT_READ | PROT_WRITE);
  if (p == MAP_FAILED) return fail(errno);
  memcpy(p, code, sizeof code);
  if (CALL(SYS_pkey_mprotect, p, PAGE, PROT_READ | PROT_EXEC, -1) != 0) return fail(errno);
  return run(p);
}

/* mmap PROT: map anonymous memory with PROT (e.g. 7, RWX) and run code written to it */
static int r_mmap(int argc, char **argv) {
  void *p = anonymous(argc > 2 ? (int)strtol(argv[2], NULL, 0) : 7);
  if (p == MAP_FAILED) return fail(errno);
  memcpy(p, code, sizeof code);
  return run(p);
}

/* Write the code to fd and map it as the loader maps a library's text. */
static int map_file(int fd) {
  if (CALL(SYS_write, fd, code, sizeof code) != sizeof code) return fail(errno);
  if (CALL(SYS_ftruncate, fd, PAGE) != 0) return fail(errno);
  void *p = (void *)CALL(SYS_mmap, NULL, PAGE, PROT_READ | PROT_EXEC,
                         MAP_PRIVATE | MAP_DENYWRITE, fd, 0);
  if (p == MAP_FAILED) return fail(errno);
  return run(p);
}

/* memfd [FLAGS]: a memfd of its own, mapped executable */
static int r_memfd(int argc, char **argv) {
  unsigned flags = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : MFD_CLOEXEC;
  int fd = CALL(SYS_memfd_create, "code", flags);
  if (fd < 0) return fail(errno);
  return map_file(fd);
}

/* file PATH: a file it creates (in a tmpfs, say), mapped executable */
static int r_file(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, argv[2], O_RDWR | O_CREAT | O_TRUNC, 0700);
  if (fd < 0) return fail(errno);
  return map_file(fd);
}

/* persona [PERSONA]: personality(READ_IMPLIES_EXEC, or PERSONA), then run code written to
 * a read-write anonymous mapping (which that persona makes executable too) */
static int r_persona(int argc, char **argv) {
  unsigned long persona = argc > 2 ? strtoul(argv[2], NULL, 0) : READ_IMPLIES_EXEC;
  if (CALL(SYS_personality, persona) == -1) return fail(errno);
  void *p = anonymous(PROT_READ | PROT_WRITE);
  if (p == MAP_FAILED) return fail(errno);
  memcpy(p, code, sizeof code);
  return run(p);
}

/* persona_ok: the personality calls a sandboxee may make: the query, and ADDR_NO_RANDOMIZE
 * (which sanitizers ask for before they re-exec) */
static int r_persona_ok(int argc, char **argv) {
  long old = CALL(SYS_personality, 0xffffffffUL);
  if (old == -1) return fail(errno);
  if (CALL(SYS_personality, (unsigned long)old | ADDR_NO_RANDOMIZE) == -1) return fail(errno);
  if (CALL(SYS_personality, 0xffffffffUL) != (old | ADDR_NO_RANDOMIZE)) return 101;
  return 0;
}

/* shmat: SysV shared memory, written through one attach, run through an SHM_EXEC one */
static int r_shmat(int argc, char **argv) {
  int id = CALL(SYS_shmget, IPC_PRIVATE, PAGE, IPC_CREAT | 0700);
  if (id < 0) return fail(errno);
  void *w = (void *)CALL(SYS_shmat, id, NULL, 0);
  CALL(SYS_shmctl, id, IPC_RMID, NULL); /* gone with the last detach */
  if (w == (void *)-1) return fail(errno);
  memcpy(w, code, sizeof code);
  void *x = (void *)CALL(SYS_shmat, id, NULL, SHM_EXEC | SHM_RDONLY);
  if (x == (void *)-1) return fail(errno);
  return run(x);
}

/* nothing: start (through the dynamic loader) and exit */
static int r_nothing(int argc, char **argv) { return 0; }

/* --- what ordinary programs do, which must keep working ------------------------------ */

static void *thread_main(void *arg) { return arg; }

/* thread: start a thread and join it */
static int r_thread(int argc, char **argv) {
  pthread_t thread;
  void *out = NULL;
  if ((errno = pthread_create(&thread, NULL, thread_main, &errno)) != 0) return fail(errno);
  if ((errno = pthread_join(thread, &out)) != 0) return fail(errno);
  return out == &errno ? 0 : 104;
}

/* dlopen LIBRARY [SYMBOL]: load a library after main, as an interpreter loads its
 * extension modules, and look a symbol up in it */
static int r_dlopen(int argc, char **argv) {
  void *library = dlopen(argv[2], RTLD_NOW);
  if (library == NULL) return 105;
  if (argc > 3 && dlsym(library, argv[3]) == NULL) return 106;
  return 0;
}

/* proc_mem: write the code over its own text (r_nothing) through /proc/self/mem (which ignores page
 * protections), then call it */
static int r_proc_mem(int argc, char **argv) {
  int fd = CALL(SYS_openat, AT_FDCWD, "/proc/self/mem", O_RDWR);
  if (fd < 0) return fail(errno);
  void *target = (void *)&r_nothing;
  if (CALL(SYS_pwrite64, fd, code, sizeof code, (off_t)(uintptr_t)target) != sizeof code)
    return fail(errno);
  return run(target);
}

static const struct {
  const char *name;
  int (*route)(int, char **);
} routes[] = {
    {"mprotect", r_mprotect}, {"pkey_mprotect", r_pkey_mprotect},
    {"mmap", r_mmap},         {"memfd", r_memfd},
    {"file", r_file},         {"persona", r_persona},
    {"persona_ok", r_persona_ok}, {"shmat", r_shmat},
    {"proc_mem", r_proc_mem}, {"nothing", r_nothing},
    {"thread", r_thread},     {"dlopen", r_dlopen},
};

int main(int argc, char **argv) {
  if (argc < 2) return 102;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (strcmp(argv[1], routes[i].name) == 0) return routes[i].route(argc, argv);
  return 103;
}
