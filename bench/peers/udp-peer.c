/* udp-peer.c - see udp-peer.h. */
#include "udp-peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LOOPS 64

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
  (void)sig;
  stop_flag = 1;
}

static int udp_socket(const char *host, int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  int one = 1,
      fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    perror("udp peer: bind");
    exit(1);
  }
  return fd;
}

typedef struct slot {
  pthread_t th;
  void *loop;
  const udp_peer_ops *ops;
} slot;

static void *thread_main(void *arg)
{
  slot *s = arg;
  s->ops->run(s->loop);
  return NULL;
}

int udp_peer_main(int argc, char **argv, const udp_peer_ops *ops)
{
  const char *host = "127.0.0.1";
  int port = 0, loops = 1, c;
  slot sl[MAX_LOOPS];
  struct sigaction sa = {.sa_handler = on_signal};
  sigset_t all, old;

  while ((c = getopt(argc, argv, "p:l:a:")) != -1) {
    switch (c) {
    case 'p': port = atoi(optarg); break;
    case 'l': loops = atoi(optarg); break;
    case 'a': host = optarg; break;
    default:
      fprintf(stderr, "usage: %s [-p PORT] [-l LOOPS] [-a HOST]\n", argv[0]);
      return 2;
    }
  }
  if (loops < 1 || loops > MAX_LOOPS)
    return 2;
  for (int i = 0; i < loops; i++) {
    int fd = udp_socket(host, port);
    if (i == 0) {
      struct sockaddr_in a;
      socklen_t len = sizeof(a);
      getsockname(fd, (struct sockaddr *)&a, &len);
      port = ntohs(a.sin_port);
    }
    sl[i].ops = ops;
    if (!(sl[i].loop = ops->create(i, fd)))
      return 1;
  }
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < loops; i++)
    pthread_create(&sl[i].th, NULL, thread_main, &sl[i]);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  printf("listening on %s:%d\n", host, port);
  fflush(stdout);
  while (!stop_flag)
    pause();
  for (int i = 0; i < loops; i++)
    ops->stop(sl[i].loop);
  for (int i = 0; i < loops; i++) {
    pthread_join(sl[i].th, NULL);
    ops->destroy(sl[i].loop);
  }
  return 0;
}
