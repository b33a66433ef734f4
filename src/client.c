/* client.c - persistent clients: one outgoing connection that a loop keeps
 * open, redialling with exponential backoff.
 *
 * A client is built on the internal form of gev_loop_connect. Its
 * connections use the user's handler (a copy kept in the client) and tell
 * the client, as their owner, when they open and when they have closed;
 * the handler itself is never wrapped, so gev_conn_set_handler works on a
 * client's connection too.
 *
 * Ownership: refs counts the caller (until gev_client_free) and the loop
 * (from the start task until the client has nothing left in the loop: no
 * connection, no connect under way, no retry timer). `detached` says the
 * loop has let go of the client for good (it finished, or was freed before
 * running the start task): gev_client_free then touches the loop no more.
 * Everything else but refs and stopped is the loop's thread's. */
#include "conn-internal.h"
#include "resolve.h"

#include <errno.h>
#include <stdlib.h>

#define DEFAULT_RETRY_MIN_MS 500
#define DEFAULT_RETRY_MAX_MS 30000

struct gev_client {
  gev__handle handle; /* in the loop's registry from the start task on */
  gev_handler uh;     /* the user's; the connections point here */
  gev_loop *l;
  gev__target target;       /* a name is looked up again by every attempt */
  gev_connect_options copt; /* every attempt; on_result is ours */
  gev_connect_fn user_result;
  void *user_arg;
  uint64_t delay_min, delay_max;
  unsigned jitter_pct;
  gev__client_watch_fn watch; /* a pool's (pool.c), or NULL */
  void *watch_arg;

  /* Any thread. */
  atomic_int refs;
  atomic_bool stopped;  /* gev_client_free ran */
  atomic_bool detached; /* the loop let go of the client */

  /* The loop's thread only. */
  uint64_t delay; /* before the next attempt */
  uint64_t rng;   /* xorshift state for the jitter */
  gev_conn *conn; /* established, until its on_close */
  gev_timer_id timer;
  bool connecting;
  bool shown;   /* the user's on_connect ran for conn: on_close is owed */
  bool started; /* the start task ran: on the loop's list, holds its ref */
  bool done;    /* the loop's reference is gone */
};

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

static void tell(gev_client *cl, int ev, gev_conn *c)
{
  if (cl->watch)
    cl->watch(cl->watch_arg, ev, c);
}

/* The loop is being freed with the start task unrun: it never had the
 * client, and will not be there for gev_client_free. */
static void start_drop(void *arg)
{
  gev_client *cl = arg;

  atomic_store(&cl->detached, true);
  tell(cl, GEV__CLIENT_GONE, NULL);
  unref(cl);
}

static bool ending(const gev_client *cl)
{
  return atomic_load(&cl->stopped) || cl->l->finishing;
}

/* Drops the loop's reference once the client has nothing in the loop. The
 * caller has decided that nothing more will be started. */
static void finish(gev_client *cl)
{
  if (!cl->started || cl->done || cl->conn || cl->connecting || cl->timer)
    return;
  cl->done = true;
  gev__handle_unregister(&cl->handle);
  atomic_store(&cl->detached, true); /* gev_client_free: no loop needed */
  tell(cl, GEV__CLIENT_GONE, NULL);
  unref(cl);
}

static void attempt(gev_client *cl);
static const gev__conn_owner owner_ops;

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
  err = gev__connect_shared(cl->l, &cl->uh, &cl->target, &cl->copt, &owner_ops,
                            cl);
  if (err == 0) {
    cl->connecting = true;
    return;
  }
  ref(cl);
  report(cl, NULL, err);
  retry_later(cl);
  unref(cl);
}

/* The connection is open: shown to the user unless the client was freed
 * while it was connecting. */
static bool opened(gev_conn *c, void *arg)
{
  gev_client *cl = arg;

  (void)c;
  if (atomic_load(&cl->stopped))
    return false; /* closed at once; no on_connect, no on_close */
  cl->shown = true;
  tell(cl, GEV__CLIENT_UP, c);
  return true;
}

/* Before the user's on_close: the connection is no longer the client's.
 * The reference keeps the client (and the handler the connection points
 * at) alive through on_close, which may free it. */
static void closing(gev_conn *c, void *arg)
{
  gev_client *cl = arg;

  ref(cl);
  if (cl->shown)
    tell(cl, GEV__CLIENT_DOWN, c);
  cl->conn = NULL;
  cl->shown = false;
}

/* After the user's on_close: dial again. */
static void closed(gev_conn *c, void *arg)
{
  gev_client *cl = arg;

  (void)c;
  retry_later(cl);
  unref(cl);
}

static const gev__conn_owner owner_ops = {opened, closing, closed};

/* The loop is finishing: no more retries. A connection or a connect under
 * way is a handle of its own, stopped by the loop too; the client finishes
 * when the last of them tells it. */
static void stop(gev__handle *h)
{
  gev_client *cl = gev__container_of(h, gev_client, handle);

  if (cl->timer) {
    gev_loop_cancel(cl->l, cl->timer);
    cl->timer = 0;
  }
  finish(cl);
}

static void stop_now(gev_client *cl);

/* Only gev_client_free schedules a client, when its task could not be
 * posted. */
static void after_pass(gev__handle *h)
{
  gev_client *cl = gev__container_of(h, gev_client, handle);

  if (atomic_load(&cl->stopped) && !cl->done)
    stop_now(cl);
}

static const gev__handle_ops client_ops = {"client", after_pass, stop, NULL};

static void start_task(void *arg)
{
  gev_client *cl = arg;

  /* The task's reference becomes the loop's. */
  cl->started = true;
  gev__handle_register(&cl->handle);
  attempt(cl);
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
  return gev__client_new_watched(out, l, h, opt, NULL, NULL);
}

int gev__client_new_watched(gev_client **out, gev_loop *l, const gev_handler *h,
                            const gev_client_options *opt,
                            gev__client_watch_fn watch, void *watch_arg)
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
  if (min > max || opt->jitter_pct > 100 ||
      gev__connect_check(&opt->connect) < 0)
    return -EINVAL;
  if (!(cl = calloc(1, sizeof(*cl))))
    return -ENOMEM;
  if ((err = gev__target_parse(opt->connect.address, &cl->target)) < 0) {
    free(cl);
    return err;
  }
  cl->uh = *h;
  cl->l = l;
  gev__handle_init(&cl->handle, l, &client_ops);
  cl->copt = opt->connect;
  cl->copt.address = NULL; /* not kept: parsed above */
  cl->copt.on_result = attempt_result;
  cl->copt.arg = cl;
  cl->user_result = opt->connect.on_result;
  cl->user_arg = opt->connect.arg;
  cl->delay_min = cl->delay = min;
  cl->delay_max = max;
  cl->jitter_pct = opt->jitter_pct;
  cl->watch = watch;
  cl->watch_arg = watch_arg;
  /* Any odd-ish nonzero seed that differs between clients and runs. */
  cl->rng = ((uint64_t)(uintptr_t)cl ^ gev__now_ms() * 0x9e3779b97f4a7c15u) | 1;
  atomic_init(&cl->refs, 2); /* the caller's and the start task's */
  atomic_init(&cl->stopped, false);
  atomic_init(&cl->detached, false);
  /* Stored before the post, which orders it before every callback: one may
   * read the caller's variable (to free the client, say). */
  *out = cl;
  if ((err = gev__loop_post_owned(l, start_task, cl, start_drop)) < 0) {
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
  if (atomic_load(&cl->detached))
    unref(cl); /* the loop is done with it, and may be gone */
  /* A closed loop finishes the client by itself; out of memory, after_pass
   * stops it (the loop's reference keeps cl; one not started yet sees
   * `stopped` in its start task). */
  else if (gev__loop_call_or_schedule(cl->l, stop_task, cl, unref_task,
                                      &cl->handle) < 0)
    unref(cl);
}

gev_conn *gev_client_conn(const gev_client *cl)
{
  return cl ? cl->conn : NULL;
}

gev_loop *gev_client_loop(const gev_client *cl)
{
  return cl ? cl->l : NULL;
}
