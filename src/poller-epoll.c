/* poller-epoll.c - the epoll backend behind poller.h. */
#include "poller.h"
#include "sys.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int gev__poller_init(gev__poller *p, int max_events)
{
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0)
    return -errno;
  p->cap = max_events;
  p->events = calloc((size_t)max_events, sizeof(struct epoll_event));
  if (!p->events) {
    close(p->epfd);
    p->epfd = -1;
    return -ENOMEM;
  }
  return 0;
}

void gev__poller_close(gev__poller *p)
{
  if (p->epfd >= 0)
    close(p->epfd);
  p->epfd = -1;
  free(p->events);
  p->events = NULL;
}

static uint32_t to_epoll(unsigned events)
{
  uint32_t e = 0;

  if (events & GEV__EV_READ)
    e |= EPOLLIN;
  if (events & GEV__EV_WRITE)
    e |= EPOLLOUT;
  return e;
}

static int ctl(gev__poller *p, int op, int fd, unsigned events, void *data)
{
  struct epoll_event ev = {.events = to_epoll(events), .data.ptr = data};

  return epoll_ctl(p->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int gev__poller_add(gev__poller *p, int fd, unsigned events, void *data)
{
  return ctl(p, EPOLL_CTL_ADD, fd, events, data);
}

int gev__poller_mod(gev__poller *p, int fd, unsigned events, void *data)
{
  return ctl(p, EPOLL_CTL_MOD, fd, events, data);
}

int gev__poller_del(gev__poller *p, int fd)
{
  return ctl(p, EPOLL_CTL_DEL, fd, 0, NULL);
}

int gev__poller_wait(gev__poller *p, gev__fired *out, int timeout_ms)
{
  struct epoll_event *ev = p->events;
  int n = gev__sys_epoll_wait(p->epfd, ev, p->cap, timeout_ms);

  if (n < 0)
    return errno == EINTR ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    unsigned e = 0;

    if (ev[i].events & EPOLLIN)
      e |= GEV__EV_READ;
    if (ev[i].events & EPOLLOUT)
      e |= GEV__EV_WRITE;
    if (ev[i].events & (EPOLLERR | EPOLLHUP))
      e |= GEV__EV_ERROR;
    out[i].data = ev[i].data.ptr;
    out[i].events = e;
  }
  return n;
}
