/* sc-echo.c - an echo server with two loops, four echo streams (one of
 * them a slow reader of 8 MiB, so that output waits in the connection's
 * own buffers) and one connection that another thread feeds with
 * gev_conn_send. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ECHOES = 4, PUSHES = 200, PUSH_LEN = 64, PUSH_SEED = 777 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gev_conn *push_conn;

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

  if (t->tag != 'P') {
    fr_echo_message(c, in, out);
    if (t->tag != 'P')
      return;
    pthread_mutex_lock(&mu);
    gev_conn_ref(c);
    push_conn = c;
    pthread_mutex_unlock(&mu);
  }
  ringbuffer_retrieve_all(in);
}

typedef struct sender {
  fr_client *peer;
  int err;
} sender;

static gev_conn *await_push(fr_client *peer)
{
  for (int i = 0; i < 20000; i++) {
    gev_conn *c;
    pthread_mutex_lock(&mu);
    c = push_conn;
    push_conn = NULL;
    pthread_mutex_unlock(&mu);
    if (c || atomic_load(&peer->finished) || atomic_load(&fr_abort))
      return c;
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  }
  return NULL;
}

/* From a thread of its own: every send crosses to the loop. */
static void *send_main(void *arg)
{
  sender *x = arg;
  gev_conn *c = await_push(x->peer);
  unsigned char chunk[PUSH_LEN];

  if (!c)
    return NULL;
  for (int i = 0; i < PUSHES && !x->err; i++) {
    for (int j = 0; j < PUSH_LEN; j++)
      chunk[j] = fr_pat(PUSH_SEED, (size_t)i * PUSH_LEN + (size_t)j);
    x->err = gev_conn_send(c, chunk, sizeof(chunk));
  }
  if (x->err)
    gev_conn_close(c);
  else
    gev_conn_shutdown_write(c);
  gev_conn_unref(c);
  return NULL;
}

int sc_echo(fault_run *r)
{
  gev_handler h = {
      .on_connect = on_connect, .on_message = on_message, .on_close = on_close};
  gev_options o = {.num_loops = 2};
  fr_client cl[ECHOES + 1];
  sender snd = {.peer = &cl[ECHOES]};
  fr_server sv;
  pthread_t st;
  int served = 0, err;

  fr_logger_install();
  if ((err = fr_server_open(&sv, &h, &o)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, ECHOES + 1, true);
  }
  memset(cl, 0, sizeof(cl));
  for (int i = 0; i <= ECHOES; i++) {
    cl[i].port = gev_server_port(sv.s);
    cl[i].tag = i < ECHOES ? 'E' : 'P';
    cl[i].len = i < ECHOES ? (i == 0 ? 8192 : 48) * 1024 : 0;
    cl[i].slow = i == 0;
    cl[i].seed = (uint32_t)(i + 1) * 31u + (uint32_t)r->seed;
    cl[i].expect = i < ECHOES ? 0 : PUSHES * PUSH_LEN;
    cl[i].rseed = PUSH_SEED;
    cl[i].no_shutdown = i == ECHOES;
    fr_client_start(&cl[i]);
  }
  pthread_create(&st, NULL, send_main, &snd);
  for (int i = 0; i <= ECHOES; i++)
    served += fr_client_join(&cl[i]) == CL_FULL;
  pthread_join(st, NULL);
  err = fr_server_close(&sv, 0);
  r->gev_error = err < 0 ? err : snd.err;
  return fr_finish(r, served, ECHOES + 1, err < 0);
}
