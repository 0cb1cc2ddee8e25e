/* A hostile sandboxee that makes its tracer work: THREADS threads each signal themselves
 * in a loop (every delivery is a ptrace signal-delivery stop for the monitor).
 *
 *   signal_storm THREADS
 *
 * It runs until killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static void on_signal(int sig) { (void)sig; }

static void *storm(void *unused) {
  (void)unused;
  pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
  for (;;) syscall(SYS_tgkill, pid, tid, SIGUSR1);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 100;
  struct sigaction action = {0};
  action.sa_handler = on_signal;
  sigaction(SIGUSR1, &action, NULL);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (int i = 0; i < threads; i++) {
    pthread_t thread;
    if (pthread_create(&thread, &attr, storm, NULL) != 0) break;
  }
  storm(NULL);
  return 0;
}
