/* udp-recvfrom-echo - the plain UDP echo baseline: epoll, then recvfrom
 * and sendto one datagram at a time until EAGAIN. Two system calls per
 * datagram, the way most UDP servers are written. */
#include "udp-peer.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct loop {
  int fd, ep, efd;
  unsigned char buf[65536];
} loop;

static void *create(int index, int fd)
{
  loop *l = calloc(1, sizeof(*l));
  struct epoll_event e = {.events = EPOLLIN};

  (void)index;
  l->fd = fd;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  e.data.fd = fd;
  epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &e);
  e.data.fd = l->efd;
  epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &e);
  return l;
}

static void echo(loop *l)
{
  for (;;) {
    struct sockaddr_storage from;
    socklen_t len = sizeof(from);
    ssize_t n = recvfrom(l->fd, l->buf, sizeof(l->buf), MSG_DONTWAIT,
                         (struct sockaddr *)&from, &len);
    if (n < 0)
      return;
    sendto(l->fd, l->buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&from,
           len);
  }
}

static void run(void *arg)
{
  loop *l = arg;
  struct epoll_event ev[8];

  for (;;) {
    int n = epoll_wait(l->ep, ev, 8, -1);
    for (int i = 0; i < n; i++) {
      if (ev[i].data.fd == l->efd)
        return;
      echo(l);
    }
  }
}

static void stop(void *arg)
{
  uint64_t one = 1;
  loop *l = arg;

  while (write(l->efd, &one, sizeof(one)) < 0 && errno == EINTR)
    ;
}

static void destroy(void *arg)
{
  loop *l = arg;

  close(l->fd);
  close(l->ep);
  close(l->efd);
  free(l);
}

int main(int argc, char **argv)
{
  static const udp_peer_ops ops = {create, run, stop, destroy};
  return udp_peer_main(argc, argv, &ops);
}
