/* udp-mmsg-echo - the hand-written batched UDP echo baseline: epoll, then
 * recvmmsg of up to 32 datagrams into static buffers and one sendmmsg of
 * the replies, again until a recvmmsg returns fewer than 32. What a
 * careful C programmer writes for this one job, with nothing general. */
#define _GNU_SOURCE
#include "udp-peer.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define SLOT 65536

typedef struct loop {
  int fd, ep, efd;
  struct mmsghdr m[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_storage name[BATCH];
  unsigned char *buf;
} loop;

static void *create(int index, int fd)
{
  loop *l = calloc(1, sizeof(*l));
  struct epoll_event e = {.events = EPOLLIN};

  (void)index;
  l->fd = fd;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  l->buf = malloc((size_t)BATCH * SLOT);
  e.data.fd = fd;
  epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &e);
  e.data.fd = l->efd;
  epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &e);
  for (int i = 0; i < BATCH; i++) {
    l->iov[i] = (struct iovec){l->buf + (size_t)i * SLOT, SLOT};
    l->m[i].msg_hdr.msg_iov = &l->iov[i];
    l->m[i].msg_hdr.msg_iovlen = 1;
    l->m[i].msg_hdr.msg_name = &l->name[i];
  }
  return l;
}

static void echo(loop *l)
{
  int n;

  do {
    for (int i = 0; i < BATCH; i++) {
      l->m[i].msg_hdr.msg_namelen = sizeof(l->name[i]);
      l->iov[i].iov_len = SLOT;
    }
    n = recvmmsg(l->fd, l->m, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
      return;
    for (int i = 0; i < n; i++)
      l->iov[i].iov_len = l->m[i].msg_len; /* the reply is the datagram */
    sendmmsg(l->fd, l->m, (unsigned)n, MSG_DONTWAIT);
  } while (n == BATCH);
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
  free(l->buf);
  free(l);
}

int main(int argc, char **argv)
{
  static const udp_peer_ops ops = {create, run, stop, destroy};
  return udp_peer_main(argc, argv, &ops);
}
