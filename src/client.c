/* client.c - persistent clients: one outgoing connection that a loop keeps
 * open, redialling with exponential backoff.
 *
 * A client is built on the internal form of gev_loop_connect. Its
 * connections point at the client's own handler (wh, the first member), so
 * the wrappers find the client from c->h without a lookup and without a
 * field in every connection. Only on_connect and on_close are wrapped;
 * on_message and on_peer_eof go straight to the user's functions.
 *
 * Ownership: refs counts the caller (until gev_client_free) and the loop
 * (from the start task until the client has nothing left in the loop: no
 * connection, no connect under way, no retry timer). Everything but refs
 * and stopped is touched only in the loop's thread. */
#include "conn-internal.h"

#include <errno.h>
#include <stdlib.h>

#define DEFAULT_RETRY_MIN_MS 500
#define DEFAULT_RETRY_MAX_MS 30000

struct gev_client {
  gev_handler wh; /* first: the connections' c->h points here */
  gev_handler uh; /* the user's */
  gev_loop *l;
  gev__addr addr;
  gev_connect_options copt; /* every attempt; on_result is ours */
  gev_connect_fn user_result;
  void *user_arg;
  uint64_t delay_min, delay_max;
  unsigned jitter_pct;

  /* Any thread. */
  atomic_int refs;
  atomic_bool stopped; /* gev_client_free ran */

  /* The loop's thread only. */
  uint64_t delay; /* before the next attempt */
  uint64_t rng;   /* xorshift state for the jitter */
  gev_conn *conn; /* established, until its on_close */
  gev_timer_id timer;
  bool connecting;
  bool shown;   /* the user's on_connect ran for conn: on_close is owed */
  bool started; /* the start task ran: on the loop's list, holds its ref */
  bool done;    /* the loop's reference is gone */
  gev_client *prev, *next;
};

static gev_client *owner(gev_conn *c)
{
  return (gev_client *)(void *)(uintptr_t)c->h;
}

static void ref(gev_client *cl)
{
  atomic_fetch_add_explicit(&cl->refs, 1, memory_order_relaxed);
}

static void unref(gev_client *cl)
{
  if (atomic_fetch_sub_explicit(&cl->refs, 1, memory_order_acq_rel) == 1)
    free(cl);
}

static void unref_task(void *arg)
{
  unref(arg);
}

static bool ending(const gev_client *cl)
{
  return atomic_load(&cl->stopped) || cl->l->finishing;
}

/* Drops the loop's reference once the client has nothing in the loop. The
 * caller has decided that nothing more will be started. */
static void finish(gev_client *cl)
{
  gev__conn_state *cs = &cl->l->cs;

  if (!cl->started || cl->done || cl->conn || cl->connecting || cl->timer)
    return;
  cl->done = true;
  if (cl->prev)
    cl->prev->next = cl->next;
  else
    cs->clients = cl->next;
  if (cl->next)
    cl->next->prev = cl->prev;
  unref(cl);
}

static void attempt(gev_client *cl);

static void retry_cb(void *arg)
{
  gev_client *cl = arg;

  cl->timer = 0; /* fired: nothing to cancel */
  attempt(cl);
}

/* The delay shortened by a random part of up to jitter_pct percent. */
static uint64_t jittered(gev_client *cl, uint64_t d)
{
  /* d * pct / 100 without overflowing for any d. */
  uint64_t cut = d / 100 * cl->jitter_pct + d % 100 * cl->jitter_pct / 100;

  if (cut == 0)
    return d;
  cl->rng ^= cl->rng << 13;
  cl->rng ^= cl->rng >> 7;
  cl->rng ^= cl->rng << 17;
  return d - (cut == UINT64_MAX ? cl->rng : cl->rng % (cut + 1));
}

static void retry_later(gev_client *cl)
{
  if (!ending(cl))
    cl->timer =
        gev_loop_run_after(cl->l, jittered(cl, cl->delay), retry_cb, cl);
  /* Doubling saturates at the maximum, without overflow. */
  cl->delay = cl->delay > cl->delay_max / 2 ? cl->delay_max : cl->delay * 2;
  finish(cl); /* when ending, or when no timer could be set */
}

static void report(gev_client *cl, gev_conn *c, int err)
{
  if (cl->user_result && !atomic_load(&cl->stopped))
    cl->user_result(c, err, cl->user_arg);
}

static void attempt_result(gev_conn *c, int err, void *arg)
{
  gev_client *cl = arg;

  ref(cl); /* the user's on_result may free the client */
  cl->connecting = false;
  if (err == 0) {
    cl->conn = c; /* on_connect (w_connect) comes next */
    cl->delay = cl->delay_min;
    report(cl, c, 0);
  } else {
    report(cl, NULL, err);
    retry_later(cl);
  }
  unref(cl);
}

static void attempt(gev_client *cl)
{
  int err;

  if (ending(cl)) {
    finish(cl);
    return;
  }
  err = gev__connect_shared(cl->l, &cl->wh, &cl->addr, &cl->copt);
  if (err == 0) {
    cl->connecting = true;
    return;
  }
  ref(cl);
  report(cl, NULL, err);
  retry_later(cl);
  unref(cl);
}

static void w_connect(gev_conn *c)
{
  gev_client *cl = owner(c);

  if (atomic_load(&cl->stopped)) {
    gev_conn_close(c); /* abandoned while connecting: never shown */
    return;
  }
  cl->shown = true;
  if (cl->uh.on_connect)
    cl->uh.on_connect(c);
}

static void w_close(gev_conn *c)
{
  gev_client *cl = owner(c);
  bool shown = cl->shown;

  ref(cl); /* the user's on_close may free the client */
  cl->conn = NULL;
  cl->shown = false;
  if (shown && cl->uh.on_close)
    cl->uh.on_close(c);
  retry_later(cl);
  unref(cl);
}

static void start_task(void *arg)
{
  gev_client *cl = arg;
  gev__conn_state *cs = &cl->l->cs;

  /* The task's reference becomes the loop's. */
  cl->started = true;
  cl->next = cs->clients;
  if (cl->next)
    cl->next->prev = cl;
  cs->clients = cl;
  attempt(cl);
}

void gev__client_cancel_all(gev_loop *l)
{
  gev_client *cl, *next;

  for (cl = l->cs.clients; cl; cl = next) {
    next = cl->next;
    if (cl->timer) {
      gev_loop_cancel(l, cl->timer);
      cl->timer = 0;
    }
    finish(cl);
  }
}

/* In the loop's thread, with stopped set. */
static void stop_now(gev_client *cl)
{
  if (cl->timer) {
    gev_loop_cancel(cl->l, cl->timer);
    cl->timer = 0;
  }
  if (cl->conn)
    gev_conn_close(cl->conn); /* w_close finishes */
  finish(cl); /* a connect under way finishes in attempt_result */
}

static void stop_task(void *arg)
{
  stop_now(arg);
  unref(arg); /* the caller's */
}

int gev_client_new(gev_client **out, gev_loop *l, const gev_handler *h,
                   const gev_client_options *opt)
{
  uint64_t min, max;
  gev_client *cl;
  int err;

  if (out)
    *out = NULL;
  if (!out || !l || !h || !opt || !opt->connect.address)
    return -EINVAL;
  min = opt->retry_min_ms ? opt->retry_min_ms : DEFAULT_RETRY_MIN_MS;
  max = opt->retry_max_ms ? opt->retry_max_ms : DEFAULT_RETRY_MAX_MS;
  if (!opt->retry_max_ms && max < min)
    max = min;
  if (min > max || opt->jitter_pct > 100)
    return -EINVAL;
  if (!(cl = calloc(1, sizeof(*cl))))
    return -ENOMEM;
  if ((err = gev__addr_parse(opt->connect.address, &cl->addr)) < 0) {
    free(cl);
    return err;
  }
  cl->uh = *h;
  cl->wh = (gev_handler){.on_connect = w_connect,
                         .on_message = h->on_message,
                         .on_close = w_close,
                         .on_peer_eof = h->on_peer_eof};
  cl->l = l;
  cl->copt = opt->connect;
  cl->copt.address = NULL; /* not kept: parsed above */
  cl->copt.on_result = attempt_result;
  cl->copt.arg = cl;
  cl->user_result = opt->connect.on_result;
  cl->user_arg = opt->connect.arg;
  cl->delay_min = cl->delay = min;
  cl->delay_max = max;
  cl->jitter_pct = opt->jitter_pct;
  /* Any odd-ish nonzero seed that differs between clients and runs. */
  cl->rng = ((uint64_t)(uintptr_t)cl ^ gev__now_ms() * 0x9e3779b97f4a7c15u) | 1;
  atomic_init(&cl->refs, 2); /* the caller's and the start task's */
  atomic_init(&cl->stopped, false);
  /* Stored before the post, which orders it before every callback: one may
   * read the caller's variable (to free the client, say). */
  *out = cl;
  if ((err = gev__loop_post_owned(l, start_task, cl, unref_task)) < 0) {
    *out = NULL;
    free(cl);
    return err;
  }
  return 0;
}

void gev_client_free(gev_client *cl)
{
  if (!cl)
    return;
  atomic_store(&cl->stopped, true);
  if (gev_loop_in_thread(cl->l)) {
    stop_now(cl);
    unref(cl);
  } else if (gev__loop_post_owned(cl->l, stop_task, cl, unref_task) < 0) {
    unref(cl); /* the loop has closed: it finishes the client by itself */
  }
}

gev_conn *gev_client_conn(const gev_client *cl)
{
  return cl ? cl->conn : NULL;
}

gev_loop *gev_client_loop(const gev_client *cl)
{
  return cl ? cl->l : NULL;
}
