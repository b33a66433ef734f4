/* sc-halfclose.c - request, FIN, answer: the server keeps what arrives
 * (on_peer_eof set, so the connection stays half-open), and after the
 * peer's FIN sends it all back with gev_conn_send and half-closes. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

enum { CLIENTS = 3 };

typedef struct held {
  unsigned char *p;
  size_t n, cap;
} held;

static void on_connect(gev_conn *c)
{
  fr_track *t = fr_track_connect(c);

  if (!(t->user = calloc(1, sizeof(held))))
    abort();
}

static void on_close(gev_conn *c)
{
  fr_track *t = gev_conn_context(c);

  if (t && t->user)
    free(((held *)t->user)->p);
  fr_track_close(c);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  fr_track *t = gev_conn_context(c);
  held *h = t->user;
  size_t n = ringbuffer_len(in);

  (void)out;
  if (!t->tag && n) {
    char tag;
    ringbuffer_read(in, &tag, 1);
    t->tag = tag;
    n--;
  }
  if (h->n + n > h->cap) {
    h->cap = (h->n + n) * 2;
    if (!(h->p = realloc(h->p, h->cap)))
      abort();
  }
  h->n += ringbuffer_read(in, h->p + h->n, n);
}

static void on_peer_eof(gev_conn *c)
{
  held *h = ((fr_track *)gev_conn_context(c))->user;
  int err = h->n ? gev_conn_send(c, h->p, h->n) : 0;

  if (err < 0)
    gev_conn_close(c);
  else
    gev_conn_shutdown_write(c);
}

int sc_halfclose(fault_run *r)
{
  gev_handler h = {.on_connect = on_connect,
                   .on_message = on_message,
                   .on_close = on_close,
                   .on_peer_eof = on_peer_eof};
  gev_options o = {.num_loops = 2};
  fr_client cl[CLIENTS];
  fr_server sv;
  int served = 0, err;

  fr_logger_install();
  if ((err = fr_server_open(&sv, &h, &o)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, CLIENTS, true);
  }
  memset(cl, 0, sizeof(cl));
  for (int i = 0; i < CLIENTS; i++) {
    cl[i].port = gev_server_port(sv.s);
    cl[i].tag = 'H';
    cl[i].len = (size_t)(i + 1) * 20000;
    cl[i].seed = (uint32_t)(i + 11);
    fr_client_start(&cl[i]);
  }
  for (int i = 0; i < CLIENTS; i++)
    served += fr_client_join(&cl[i]) == CL_FULL;
  err = fr_server_close(&sv, 0);
  r->gev_error = err;
  return fr_finish(r, served, CLIENTS, err < 0);
}
