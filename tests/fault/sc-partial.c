/* sc-partial.c - a handler that takes its input in records of 1000 bytes
 * and leaves the rest (as a framing protocol does), echoing each record:
 * the remainder stays in the connection's own input buffer, so the next
 * read goes to two segments and the spill area (readv, and the growth
 * that must keep spilled bytes), and replies queue behind a reader that
 * stalls (the output wraps: sendmsg). */
#include "harness.h"

#include <string.h>

enum { CLIENTS = 3, RECORD = 1000 };

static void on_connect(gev_conn *c)
{
  fr_track_connect(c);
}
static void on_close(gev_conn *c)
{
  fr_track_close(c);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  fr_track *t = gev_conn_context(c);
  char rec[RECORD];

  if (!t->tag && ringbuffer_len(in) > 0) {
    char tag;
    ringbuffer_read(in, &tag, 1);
    t->tag = tag;
  }
  while (ringbuffer_len(in) >= RECORD &&
         ringbuffer_len(out) + RECORD <= ringbuffer_limit(out)) {
    ringbuffer_read(in, rec, RECORD);
    if (ringbuffer_write(out, rec, RECORD) < 0) {
      gev_conn_close(c); /* a record read and not echoed: the stream is
                            broken, and so is this connection */
      return;
    }
  }
}

int sc_partial(fault_run *r)
{
  gev_handler h = {
      .on_connect = on_connect, .on_message = on_message, .on_close = on_close};
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
    cl[i].tag = 'R';
    cl[i].len = (size_t)RECORD * (size_t)(200 + 150 * i); /* whole records */
    cl[i].seed = (uint32_t)(i + 51);
    cl[i].slow = i == 0;
    fr_client_start(&cl[i]);
  }
  for (int i = 0; i < CLIENTS; i++)
    served += fr_client_join(&cl[i]) == CL_FULL;
  err = fr_server_close(&sv, 0);
  r->gev_error = err;
  return fr_finish(r, served, CLIENTS, err < 0);
}
