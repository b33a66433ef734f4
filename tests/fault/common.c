/* common.c - the pieces scenarios share (harness.h). */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

atomic_int fr_connects, fr_closes, fr_violations, fr_log_lines;
atomic_bool fr_abort;
static atomic_int bad_streams, timeouts;

int fr_fail(fault_run *r, const char *fmt, ...)
{
  va_list ap;

  if (r->why[0])
    return 1; /* the first reason is the one to read */
  va_start(ap, fmt);
  vsnprintf(r->why, sizeof(r->why), fmt, ap);
  va_end(ap);
  return 1;
}

int fr_finish(fault_run *r, int served, int total, bool whole_failed)
{
  int conns = atomic_load(&fr_connects), closes = atomic_load(&fr_closes);

  r->served = served;
  r->closed = total - served;
  r->logs = atomic_load(&fr_log_lines);
  if (atomic_load(&fr_violations))
    return fr_fail(r, "%d on_close violations", atomic_load(&fr_violations));
  if (conns != closes)
    return fr_fail(r, "%d on_connect but %d on_close", conns, closes);
  if (atomic_load(&bad_streams))
    return fr_fail(r, "%d streams with wrong bytes", atomic_load(&bad_streams));
  if (atomic_load(&timeouts))
    return fr_fail(r, "%d streams hung (no progress, no close)",
                   atomic_load(&timeouts));
  if (r->how != RUN_NTH || fault_injected() == 0) {
    if (r->gev_error)
      return fr_fail(r, "gev call failed: %d (%s) without a hard fault",
                     r->gev_error, gev_strerror(r->gev_error));
    if (served != total)
      return fr_fail(r, "%d of %d served without a hard fault", served, total);
    return 0;
  }
  if (whole_failed)
    return r->gev_error < 0 ? 0 : fr_fail(r, "set-up failed, no errno");
  if (total - served > 1)
    return fr_fail(r, "one fault hurt %d connections (of %d)", total - served,
                   total);
  return 0;
}

fr_track *fr_track_connect(gev_conn *c)
{
  fr_track *t = gev_conn_context(c);

  if (!t) {
    t = calloc(1, sizeof(*t));
    if (!t)
      abort();
    gev_conn_set_context(c, t);
  }
  if (t->connects++)
    atomic_fetch_add(&fr_violations, 1);
  atomic_fetch_add(&fr_connects, 1);
  return t;
}

void fr_track_close(gev_conn *c)
{
  fr_track *t = gev_conn_context(c);

  if (!t || !t->connects || t->closes++) {
    atomic_fetch_add(&fr_violations, 1);
    return;
  }
  atomic_fetch_add(&fr_closes, 1);
  free(t->user);
  free(t);
  gev_conn_set_context(c, NULL);
}

static void count_log(gev_log_level level, const char *msg, void *arg)
{
  (void)arg;
  atomic_fetch_add(&fr_log_lines, 1);
  if (getenv("FAULT_VERBOSE"))
    fprintf(stderr, "  log %d: %s\n", (int)level, msg);
}

void fr_logger_install(void)
{
  gev_set_logger(count_log, GEV_LOG_INFO, NULL);
}

static void *server_main(void *arg)
{
  fr_server *v = arg;

  v->start_rc = gev_server_start(v->s);
  atomic_store(&v->done, true);
  if (v->start_rc < 0)
    atomic_store(&fr_abort, true);
  return NULL;
}

int fr_server_open(fr_server *v, const gev_handler *h, gev_options *o)
{
  int err;

  memset(v, 0, sizeof(*v));
  if (!o->address)
    o->address = "127.0.0.1:0";
  err = gev_server_new(&v->s, h, o);
  if (err < 0)
    return err;
  if (pthread_create(&v->t, NULL, server_main, v) != 0)
    abort();
  return 0;
}

int fr_server_close(fr_server *v, uint64_t shutdown_ms)
{
  if (shutdown_ms) {
    int err = gev_server_shutdown(v->s, shutdown_ms);
    if (err < 0 && !atomic_load(&v->done))
      gev_server_stop(v->s);
  } else {
    gev_server_stop(v->s);
  }
  pthread_join(v->t, NULL);
  gev_server_free(v->s);
  return v->start_rc;
}

static void *loop_main(void *arg)
{
  fr_loop *x = arg;

  x->rc = gev_loop_run(x->l);
  return NULL;
}

int fr_loop_open(fr_loop *x)
{
  int err = gev_loop_new(&x->l);

  if (err < 0)
    return err;
  if (pthread_create(&x->t, NULL, loop_main, x) != 0)
    abort();
  return 0;
}

int fr_loop_close(fr_loop *x)
{
  gev_loop_stop(x->l);
  pthread_join(x->t, NULL);
  gev_loop_free(x->l);
  return x->rc;
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int dial(int port, bool small_window)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rcv = 65536;

  if (fd < 0)
    return -1;
  /* A small window: the server's socket buffer fills, its output waits. */
  if (small_window)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* One poll-driven stream; returns the outcome. */
static int stream(fr_client *c, int fd)
{
  size_t want = c->expect ? c->expect : c->len, sent = 0, hdr = 1;
  uint32_t rng = c->seed | 1, rseed = c->expect ? c->rseed : c->seed;
  uint64_t deadline = now_ms() + (uint64_t)c->timeout_ms;
  unsigned char buf[16384];
  bool wr_shut = false;

  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    bool more = hdr || sent < c->len;
    ssize_t n;

    if (more)
      p.events |= POLLOUT;
    if (!more && !wr_shut && !c->no_shutdown) {
      shutdown(fd, SHUT_WR);
      wr_shut = true;
    }
    if (atomic_load(&fr_abort))
      return CL_CLOSED;
    if (now_ms() > deadline)
      return CL_TIMEOUT;
    if (poll(&p, 1, 50) <= 0)
      continue;
    if (p.revents & POLLOUT) {
      size_t k;
      rng = rng * 1103515245u + 12345u;
      k = hdr ? 1 : 1 + (rng >> 8) % sizeof(buf);
      if (!hdr && k > c->len - sent)
        k = c->len - sent;
      if (hdr)
        buf[0] = (unsigned char)c->tag;
      else
        for (size_t i = 0; i < k; i++)
          buf[i] = fr_pat(c->seed, sent + i);
      n = send(fd, buf, k, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        return CL_CLOSED;
      if (n > 0 && hdr)
        hdr = 0;
      else if (n > 0)
        sent += (size_t)n;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      if (c->slow && now_ms() + (uint64_t)c->timeout_ms < deadline + 200)
        p.revents &= ~POLLIN; /* the first 200 ms: no reading at all */
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0)
        return c->got == want ? CL_FULL : CL_CLOSED;
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        return CL_CLOSED;
      for (ssize_t i = 0; i < n; i++)
        if (c->got + (size_t)i >= want ||
            buf[i] != fr_pat(rseed, c->got + (size_t)i))
          return CL_BAD;
      if (n > 0)
        c->got += (size_t)n;
    }
  }
}

static void *client_main(void *arg)
{
  fr_client *c = arg;
  int fd = dial(c->port, c->slow);

  if (fd < 0) {
    c->outcome = CL_NOCONN;
    atomic_store(&c->finished, true);
    return NULL;
  }
  c->outcome = stream(c, fd);
  close(fd);
  if (c->outcome == CL_BAD)
    atomic_fetch_add(&bad_streams, 1);
  if (c->outcome == CL_TIMEOUT)
    atomic_fetch_add(&timeouts, 1);
  if (c->outcome != CL_FULL && getenv("FAULT_VERBOSE"))
    fprintf(stderr, "  client %c%u: %s after %zu bytes\n", c->tag, c->seed,
            fr_outcome_name(c->outcome), c->got);
  atomic_store(&c->finished, true);
  return NULL;
}

void fr_client_start(fr_client *c)
{
  if (!c->timeout_ms)
    c->timeout_ms = 10000;
  c->got = 0;
  if (pthread_create(&c->t, NULL, client_main, c) != 0)
    abort();
}

int fr_client_join(fr_client *c)
{
  pthread_join(c->t, NULL);
  return c->outcome;
}

const char *fr_outcome_name(int o)
{
  static const char *const n[] = {"full", "closed", "bad", "timeout",
                                  "no-connection"};
  return n[o];
}

void fr_echo_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  fr_track *t = gev_conn_context(c);
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);

  if (t && !t->tag && ringbuffer_len(in) > 0) {
    char tag;
    ringbuffer_read(in, &tag, 1);
    t->tag = tag;
  }
  ringbuffer_move(out, in, lim > used ? lim - used : 0);
}
