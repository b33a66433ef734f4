/* sc-client.c - outgoing connections against an echo server: three
 * one-shot gev_loop_connect streams (client), and a gev_client that must
 * complete five sessions, redialling after each close and after every
 * failure (reconnect). */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STREAMS = 3, SESSIONS = 5, LEN = 16 * 1024 };

static atomic_int done, served, attempts;

typedef struct stream_ctx {
  size_t got;
  bool complete;
} stream_ctx;

static void srv_connect(gev_conn *c)
{
  fr_track_connect(c);
}
static void srv_close(gev_conn *c)
{
  fr_track_close(c);
}

static void cli_connect(gev_conn *c)
{
  fr_track *t = fr_track_connect(c);
  unsigned char buf[1024];

  t->user = calloc(1, sizeof(stream_ctx));
  if (!t->user)
    abort();
  buf[0] = 'E';
  if (gev_conn_send(c, buf, 1) < 0) {
    gev_conn_close(c);
    return;
  }
  for (size_t off = 0; off < LEN; off += sizeof(buf)) {
    for (size_t i = 0; i < sizeof(buf); i++)
      buf[i] = fr_pat(5, off + i);
    if (gev_conn_send(c, buf, sizeof(buf)) < 0) {
      gev_conn_close(c);
      return;
    }
  }
}

static void cli_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  fr_track *t = gev_conn_context(c);
  stream_ctx *s = t->user;
  unsigned char buf[4096];
  size_t n;

  (void)out;
  while ((n = ringbuffer_read(in, buf, sizeof(buf))) > 0) {
    for (size_t i = 0; i < n; i++)
      if (s->got + i >= LEN || buf[i] != fr_pat(5, s->got + i)) {
        atomic_fetch_add(&fr_violations, 1); /* a wrong byte */
        gev_conn_close(c);
        return;
      }
    s->got += n;
  }
  if (s->got == LEN && !s->complete) {
    s->complete = true;
    atomic_fetch_add(&served, 1);
    gev_conn_close(c);
  }
}

static void cli_close(gev_conn *c)
{
  fr_track_close(c);
  atomic_fetch_add(&done, 1);
}

static void on_result(gev_conn *c, int err, void *arg)
{
  (void)c, (void)arg;
  atomic_fetch_add(&attempts, 1);
  if (err < 0)
    atomic_fetch_add(&done, 1);
}

static const gev_handler srv_h = {.on_connect = srv_connect,
                                  .on_message = fr_echo_message,
                                  .on_close = srv_close};
static const gev_handler cli_h = {.on_connect = cli_connect,
                                  .on_message = cli_message,
                                  .on_close = cli_close};

static bool wait_for(atomic_int *v, int want, int ms)
{
  for (int i = 0; i < ms && atomic_load(v) < want; i++)
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  return atomic_load(v) >= want;
}

static int with_server(fault_run *r, fr_server *sv, fr_loop *lp, char *addr)
{
  gev_options o = {.num_loops = 1};
  int err;

  fr_logger_install();
  if ((err = fr_server_open(sv, &srv_h, &o)) < 0)
    return r->gev_error = err;
  if ((err = fr_loop_open(lp)) < 0) {
    fr_server_close(sv, 0);
    return r->gev_error = err;
  }
  snprintf(addr, 32, "127.0.0.1:%d", gev_server_port(sv->s));
  return 0;
}

static int end(fault_run *r, fr_server *sv, fr_loop *lp, int total)
{
  int e1 = fr_loop_close(lp), e2 = fr_server_close(sv, 0);

  if (e1 < 0 || e2 < 0)
    r->gev_error = e1 < 0 ? e1 : e2;
  int s = atomic_load(&served);

  return fr_finish(r, s < total ? s : total, total, e1 < 0 || e2 < 0);
}

int sc_client(fault_run *r)
{
  fr_server sv;
  fr_loop lp;
  char addr[32];
  int started = 0;

  if (with_server(r, &sv, &lp, addr) < 0)
    return fr_finish(r, 0, STREAMS, true);
  for (int i = 0; i < STREAMS; i++) {
    gev_connect_options co = {
        .address = addr, .timeout_ms = 5000, .on_result = on_result};
    int err = gev_loop_connect(lp.l, &cli_h, &co);
    if (err < 0)
      r->gev_error = err;
    else
      started++;
  }
  if (!wait_for(&done, started, 15000))
    fr_fail(r, "%d of %d streams never ended", started - atomic_load(&done),
            started);
  return end(r, &sv, &lp, STREAMS);
}

int sc_reconnect(fault_run *r)
{
  gev_client_options co = {.retry_min_ms = 5, .retry_max_ms = 40};
  fr_server sv;
  fr_loop lp;
  gev_client *cl;
  char addr[32];
  int err;

  if (with_server(r, &sv, &lp, addr) < 0)
    return fr_finish(r, 0, SESSIONS, true);
  co.connect.address = addr;
  co.connect.timeout_ms = 2000;
  co.connect.on_result = on_result;
  if ((err = gev_client_new(&cl, lp.l, &cli_h, &co)) < 0) {
    r->gev_error = err;
    end(r, &sv, &lp, SESSIONS);
    return fr_finish(r, 0, SESSIONS, true);
  }
  /* One fault costs at most one session: the client must recover. */
  if (!wait_for(&served, SESSIONS, 15000))
    fr_fail(r, "%d of %d sessions after %d attempts", atomic_load(&served),
            SESSIONS, atomic_load(&attempts));
  gev_client_free(cl);
  return end(r, &sv, &lp, SESSIONS);
}
