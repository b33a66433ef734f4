/* epoll-echo - the baseline: a minimal hand-written epoll echo server.
 *
 * Level-triggered. Per readiness a connection does at most one read and one
 * write through its own small buffer: read what is there, write it back;
 * if the kernel takes only part, wait for EPOLLOUT (not reading meanwhile)
 * and then write the rest. Nothing else: no timers, no task queue, no
 * buffer growth. It shows how fast an echo server can be on this machine
 * with this client, and so what a library's overhead costs. */
#include "peer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256

typedef struct conn {
  int fd;
  size_t off, len; /* buf[off, len) waits to be written */
  char buf[PEER_BUF_SIZE];
} conn;

typedef struct loop {
  int ep, lfd, stopfd;
} loop;

/* epoll data for the listener and the stop eventfd; conns use their pointer */
static char listener_tag, stop_tag;

static void conn_close(conn *c)
{
  close(c->fd); /* also leaves the epoll set */
  free(c);
}

static void accept_all(loop *l)
{
  for (;;) {
    int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return; /* EAGAIN, or out of fds: try again at the next readiness */
    }
    peer_nodelay(fd);
    conn *c = malloc(sizeof(*c));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c || (c->fd = fd, c->off = c->len = 0,
               epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0)) {
      close(fd);
      free(c);
    }
  }
}

static void on_ready(loop *l, conn *c)
{
  int was_writing = c->len > 0;

  if (!was_writing) {
    ssize_t n = read(c->fd, c->buf, sizeof(c->buf));
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
      conn_close(c); /* EOF or error */
      return;
    }
    c->off = 0;
    c->len = (size_t)n;
  }
  ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  if (w < 0 && errno != EAGAIN && errno != EINTR) {
    conn_close(c);
    return;
  }
  if (w > 0)
    c->off += (size_t)w;
  if (c->off == c->len) {
    c->off = c->len = 0;
    if (was_writing) { /* drained: read again */
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
      epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
  } else if (!was_writing) { /* the kernel took part: wait for room */
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
}

static void *create(int index, int lfd)
{
  loop *l = calloc(1, sizeof(*l));
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
  struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &stop_tag};

  (void)index;
  if (!l)
    return NULL;
  l->lfd = lfd;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (l->ep < 0 || l->stopfd < 0 ||
      epoll_ctl(l->ep, EPOLL_CTL_ADD, lfd, &lev) < 0 ||
      epoll_ctl(l->ep, EPOLL_CTL_ADD, l->stopfd, &sev) < 0) {
    free(l);
    return NULL;
  }
  return l;
}

static void run(void *arg)
{
  loop *l = arg;
  struct epoll_event ev[MAX_EVENTS];

  for (;;) {
    int n = epoll_wait(l->ep, ev, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR)
      return;
    for (int i = 0; i < n; i++) {
      void *p = ev[i].data.ptr;
      if (p == &stop_tag)
        return;
      if (p == &listener_tag)
        accept_all(l);
      else
        on_ready(l, p);
    }
  }
}

static void stop(void *arg)
{
  peer_wake(((loop *)arg)->stopfd);
}

static void destroy(void *arg)
{
  loop *l = arg;
  /* Open connections go with the process: nothing tracks them here. */
  close(l->lfd);
  close(l->stopfd);
  close(l->ep);
  free(l);
}

int main(int argc, char **argv)
{
  static const peer_ops ops = {create, run, stop, destroy};
  return peer_main(argc, argv, &ops);
}
