/*
 * The pod sandbox's process (containerd's sandbox_image, tagged registry.k8s.io/pause:3.10).
 *
 * Behaves as Kubernetes' own build/pause/linux/pause.c: holds the pod's namespaces open by
 * sleeping until SIGINT or SIGTERM (then exits 0), and, being PID 1 of the pod when the PID
 * namespace is shared, reaps every child that exits (SIGCHLD). `-v` prints the version.
 * Built here with `gcc -static` by tests/harness/images.py, so the image is one file.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.10-mltask"

static void on_shutdown(int signo) {
  psignal(signo, "Shutting down, got signal");
  exit(0);
}

static void on_child(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

static int handle(int signo, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    if (strcasecmp(argv[i], "-v") == 0) {
      printf("pause.c %s\n", PAUSE_VERSION);
      return 0;
    }
  }
  if (getpid() != 1) {
    /* Not an error: pause is also used outside pod sandboxes. */
    fprintf(stderr, "Warning: pause should be the first process\n");
  }
  if (handle(SIGINT, on_shutdown, 0) < 0) return 1;
  if (handle(SIGTERM, on_shutdown, 0) < 0) return 2;
  if (handle(SIGCHLD, on_child, SA_NOCLDSTOP) < 0) return 3;
  for (;;) pause();
  fprintf(stderr, "Error: infinite loop terminated\n");
  return 42;
}
