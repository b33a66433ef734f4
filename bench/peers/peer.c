/* peer.c - the command line, listeners, threads and signals of the peer echo
 * servers (see peer.h). */
#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LOOPS 256

typedef struct slot {
  pthread_t th;
  void *loop;
  const peer_ops *ops;
} slot;

void peer_nodelay(int fd)
{
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void peer_wake(int efd)
{
  uint64_t one = 1;
  while (write(efd, &one, sizeof(one)) < 0 && errno == EINTR)
    ;
}

/* A non-blocking SO_REUSEPORT listener on host:port; -1 with errno set. */
static int listen_on(const char *host, int port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  int one = 1, fd;

  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    errno = EINVAL;
    return -1;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
      bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      listen(fd, SOMAXCONN) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static int bound_port(int fd)
{
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);

  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
    return -1;
  return ntohs(sa.sin_port);
}

static void *thread_main(void *arg)
{
  slot *s = arg;
  s->ops->run(s->loop);
  return NULL;
}

static void usage(const char *prog, int st)
{
  fprintf(st ? stderr : stdout,
          "usage: %s [-p PORT (0 = free)] [-l LOOPS] [-a HOST]\n", prog);
  exit(st);
}

int peer_main(int argc, char **argv, const peer_ops *ops)
{
  static const struct option lo[] = {{"port", required_argument, 0, 'p'},
                                     {"loops", required_argument, 0, 'l'},
                                     {"address", required_argument, 0, 'a'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  const char *host = "127.0.0.1";
  int port = 0, loops = 1, ch, sig, nstarted = 0;
  static slot slots[MAX_LOOPS];
  sigset_t set;

  while ((ch = getopt_long(argc, argv, "p:l:a:h", lo, NULL)) != -1) {
    switch (ch) {
    case 'p': port = atoi(optarg); break;
    case 'l': loops = atoi(optarg); break;
    case 'a': host = optarg; break;
    case 'h': usage(argv[0], 0); break;
    default: usage(argv[0], 2);
    }
  }
  if (optind != argc || port < 0 || port > 65535 || loops < 1 ||
      loops > MAX_LOOPS)
    usage(argv[0], 2);

  /* A peer that went away must not kill the server. The loop threads block
   * SIGINT/SIGTERM (they inherit this mask); main waits for them. */
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  for (int i = 0; i < loops; i++) {
    int fd = listen_on(host, port);
    if (fd < 0) {
      fprintf(stderr, "%s: listen on %s:%d: %s\n", argv[0], host, port,
              strerror(errno));
      return 1;
    }
    port = bound_port(fd); /* port 0: the others join the chosen port */
    slots[i].ops = ops;
    slots[i].loop = ops->create(i, fd);
    if (!slots[i].loop) {
      fprintf(stderr, "%s: loop %d: setup failed\n", argv[0], i);
      return 1;
    }
  }
  for (int i = 0; i < loops; i++) {
    if (pthread_create(&slots[i].th, NULL, thread_main, &slots[i]) != 0) {
      fprintf(stderr, "%s: pthread_create failed\n", argv[0]);
      break;
    }
    nstarted++;
  }
  if (nstarted == loops) {
    printf("listening on %s:%d\n", host, port);
    fflush(stdout);
    while (sigwait(&set, &sig) != 0)
      ;
  }
  for (int i = 0; i < nstarted; i++)
    ops->stop(slots[i].loop);
  for (int i = 0; i < nstarted; i++)
    pthread_join(slots[i].th, NULL);
  for (int i = 0; i < loops; i++)
    ops->destroy(slots[i].loop);
  return nstarted == loops ? 0 : 1;
}
