/* libevent-echo - the echo server on libevent 2.1: an evconnlistener and
 * one bufferevent per connection, whose read callback moves the input
 * evbuffer to the output evbuffer (no copy); the bufferevent writes it.
 * An eventfd event stops the loop from the main thread. */
#include "peer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

typedef struct loop {
  struct event_base *base;
  struct evconnlistener *listener;
  struct event *stop_ev;
  int stopfd;
} loop;

static void read_cb(struct bufferevent *bev, void *arg)
{
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
    bufferevent_free(bev); /* closes the socket (BEV_OPT_CLOSE_ON_FREE) */
}

static void accept_cb(struct evconnlistener *ls, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
  struct event_base *base = evconnlistener_get_base(ls);
  struct bufferevent *bev;

  (void)sa;
  (void)salen;
  (void)arg;
  peer_nodelay(fd);
  bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) {
    evutil_closesocket(fd);
    return;
  }
  bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  event_base_loopbreak(arg);
}

static void *create(int index, int lfd)
{
  loop *l = calloc(1, sizeof(*l));

  (void)index;
  if (!l)
    return NULL;
  l->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  l->base = event_base_new();
  if (l->stopfd < 0 || !l->base)
    goto fail;
  /* lfd already listens (SO_REUSEPORT, see peer.c): backlog 0 keeps it. */
  l->listener = evconnlistener_new(l->base, accept_cb, NULL,
                                   LEV_OPT_CLOSE_ON_FREE, 0, lfd);
  l->stop_ev = event_new(l->base, l->stopfd, EV_READ, stop_cb, l->base);
  if (!l->listener || !l->stop_ev || event_add(l->stop_ev, NULL) < 0)
    goto fail;
  return l;
fail:
  if (l->stop_ev)
    event_free(l->stop_ev);
  if (l->listener)
    evconnlistener_free(l->listener);
  if (l->base)
    event_base_free(l->base);
  if (l->stopfd >= 0)
    close(l->stopfd);
  free(l);
  return NULL;
}

static void run(void *arg)
{
  loop *l = arg;
  event_base_dispatch(l->base);
}

static void stop(void *arg)
{
  peer_wake(((loop *)arg)->stopfd);
}

static void destroy(void *arg)
{
  loop *l = arg;
  /* Open bufferevents go with the process: nothing tracks them here. */
  event_free(l->stop_ev);
  evconnlistener_free(l->listener);
  event_base_free(l->base);
  close(l->stopfd);
  free(l);
}

int main(int argc, char **argv)
{
  static const peer_ops ops = {create, run, stop, destroy};
  return peer_main(argc, argv, &ops);
}
