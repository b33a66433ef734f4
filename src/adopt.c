/* adopt.c - gev_loop_adopt: an fd that is already connected (one that
 * gev_conn_detach handed back, a socketpair, an inherited socket) becomes
 * a connection on a loop.
 *
 * The fd is checked in the caller's thread, so that a bad one fails the
 * call and stays the caller's; from a successful call on it is the
 * library's, also when the loop goes away before taking it (then it is
 * closed). The bytes to show and to send first are copied into the
 * request and become the connection's own buffers before it starts, so
 * nothing the handler does in on_connect can overtake them. */
#include "conn-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct adopt_req {
  gev_loop *l;
  gev_handler h;
  gev_adopt_options opt; /* in and out point into data */
  gev__addr peer;
  char data[]; /* in_len bytes of input, then out_len of output */
} adopt_req;

static void drop_req(void *arg)
{
  adopt_req *r = arg;

  close(r->opt.fd);
  free(r);
}

static void report(adopt_req *r, int err)
{
  if (r->opt.on_result)
    r->opt.on_result(NULL, err, r->opt.arg);
}

/* Bytes the connection holds before it starts: true, or false on ENOMEM.
 * Past the cap too (limit 0 while writing): they were accepted earlier. */
static bool prefill(gev_conn *c, ringbuffer **rb, const void *p, size_t n)
{
  int r;

  if (!n)
    return true;
  if (!(*rb = gev__bufs_get(&c->loop->bufs, c->max_buffer)))
    return false;
  ringbuffer_set_limit(*rb, 0);
  r = ringbuffer_write(*rb, p, n);
  ringbuffer_set_limit(*rb, c->max_buffer);
  return r == 0;
}

static gev_conn *make_conn(adopt_req *r)
{
  const gev_adopt_options *o = &r->opt;
  size_t max = o->max_buffer ? o->max_buffer : GEV__DEFAULT_MAX_BUFFER;
  gev_conn *c =
      gev__conn_new(r->l, &r->h, true, max, o->fd,
                    (const struct sockaddr *)&r->peer.ss, r->peer.len);

  if (!c)
    return NULL;
  c->flags |= GEV__CF_OUTGOING; /* not the server's accepted one */
  c->ctx = o->context;
  if (o->idle_timeout_ms || o->reader_idle_ms || o->writer_idle_ms)
    gev__conn_idle_defaults(
        c, &(gev_options){.idle_timeout_ms = o->idle_timeout_ms,
                          .reader_idle_ms = o->reader_idle_ms,
                          .writer_idle_ms = o->writer_idle_ms});
  if (!prefill(c, &c->out, o->out, o->out_len) ||
      !prefill(c, &c->in, o->in, o->in_len)) {
    gev__conn_free_unstarted(c); /* the fd with it */
    return NULL;
  }
  gev__conn_publish_out(c);
  return c;
}

static void adopt_task(void *arg)
{
  adopt_req *r = arg;
  gev_loop *l = r->l;
  gev_conn *c;
  int fl, err;

  if (l->finishing) {
    report(r, -ECANCELED);
    drop_req(r);
    return;
  }
  fl = fcntl(r->opt.fd, F_GETFL);
  if (fl < 0 || fcntl(r->opt.fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    err = -errno;
    report(r, err);
    drop_req(r);
    return;
  }
  if (!(c = make_conn(r))) {
    report(r, -ENOMEM);
    free(r);
    return;
  }
  atomic_fetch_add(&l->nconns, 1);
  if ((err = gev__conn_start(c, NULL, NULL, r->opt.on_result, r->opt.arg)) <
      0) {
    atomic_fetch_sub(&l->nconns, 1);
    report(r, err);
  } else if (c->in && gev__conn_state(c) != GEV__CS_CLOSED) {
    c->flags |= GEV__CF_REDELIVER; /* shown after the pass */
    gev__conn_schedule(c);
  }
  free(r);
}

/* A connected stream socket, or why not. */
static int check_fd(int fd, gev__addr *peer)
{
  int type;
  socklen_t len = sizeof(type);

  if (fd < 0)
    return -EBADF;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return -errno; /* EBADF, ENOTSOCK */
  if (type != SOCK_STREAM)
    return -EINVAL;
  peer->len = sizeof(peer->ss);
  if (getpeername(fd, (struct sockaddr *)&peer->ss, &peer->len) < 0)
    return -errno; /* ENOTCONN: not connected, or listening */
  return 0;
}

int gev_loop_adopt(gev_loop *l, const gev_handler *h,
                   const gev_adopt_options *opt)
{
  gev__addr peer;
  adopt_req *r;
  int err;

  if (!l || !h || !opt || (opt->in_len && !opt->in) ||
      (opt->out_len && !opt->out) || opt->idle_timeout_ms < 0 ||
      opt->reader_idle_ms < 0 || opt->writer_idle_ms < 0 ||
      opt->in_len > SIZE_MAX / 2 - sizeof(*r) || opt->out_len > SIZE_MAX / 2)
    return -EINVAL;
  if ((err = check_fd(opt->fd, &peer)) < 0)
    return err;
  if (!(r = malloc(sizeof(*r) + opt->in_len + opt->out_len)))
    return -ENOMEM;
  r->l = l;
  r->h = *h;
  r->opt = *opt;
  r->peer = peer;
  if (opt->in_len)
    memcpy(r->data, opt->in, opt->in_len);
  if (opt->out_len)
    memcpy(r->data + opt->in_len, opt->out, opt->out_len);
  r->opt.in = r->data;
  r->opt.out = r->data + opt->in_len;
  if ((err = gev__loop_post_owned(l, adopt_task, r, drop_req)) < 0) {
    free(r); /* refused: the fd stays the caller's */
    return err;
  }
  return 0;
}
