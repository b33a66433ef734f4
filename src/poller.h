/* poller.h - internal: not installed. The only place that knows epoll. */
#ifndef GEV_SRC_POLLER_H
#define GEV_SRC_POLLER_H

#include <stdint.h>

enum {
  GEV__EV_READ = 1u << 0,
  GEV__EV_WRITE = 1u << 1,
  GEV__EV_ERROR = 1u << 2, /* EPOLLERR or EPOLLHUP: always reported */
};

/* One readiness event, as the loop sees it. */
typedef struct gev__fired {
  void *data;
  unsigned events;
} gev__fired;

typedef struct gev__poller {
  int epfd;
  void *events; /* struct epoll_event[cap]; opaque outside poller-epoll.c */
  int cap;
} gev__poller;

/* 0 or -errno. */
int gev__poller_init(gev__poller *p, int max_events);
void gev__poller_close(gev__poller *p);
/* Level-triggered interest in GEV__EV_READ|GEV__EV_WRITE; 0 or -errno. */
int gev__poller_add(gev__poller *p, int fd, unsigned events, void *data);
int gev__poller_mod(gev__poller *p, int fd, unsigned events, void *data);
/* Before close(fd): epoll watches the open file, not the fd, so a close
 * alone leaves the registration while another process holds the file (a
 * fork that has not exec'ed yet), and its events would name freed memory. */
int gev__poller_del(gev__poller *p, int fd);
/* Fills out[0..n) with at most p->cap events; returns n (0 on timeout or
 * EINTR) or -errno. timeout_ms < 0 waits forever. */
int gev__poller_wait(gev__poller *p, gev__fired *out, int timeout_ms);

#endif
