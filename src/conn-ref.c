/* conn-ref.c - a connection's references, and the one way to have code run
 * in its loop from any thread (a posted request holds a reference).
 *
 * A leaf of the connection layer: it frees memory and posts tasks, and
 * calls nothing in conn.c or conn-api.c. */
#include "conn-internal.h"

#include <errno.h>
#include <stdlib.h>

void gev_conn_ref(gev_conn *c)
{
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/* The buffers and the fd went at close; what is left is memory, and the
 * user's context if it gave a destructor for it. */
void gev_conn_unref(gev_conn *c)
{
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (c->ctx_free)
    c->ctx_free(c->ctx);
  free(c->h_own);
  free(atomic_load_explicit(&c->local, memory_order_acquire));
  free(c);
}

static void op_run(void *arg)
{
  gev__conn_op *op = arg;
  gev_conn *c = op->c;

  if (gev__conn_state(c) != GEV__CS_CLOSED)
    op->fn(c, op);
  free(op);
  gev_conn_unref(c);
}

static void op_drop(void *arg)
{
  gev__conn_op *op = arg;

  gev_conn_unref(op->c);
  free(op);
}

static int run_here(gev_conn *c, gev__conn_op *op)
{
  return gev__conn_state(c) != GEV__CS_CLOSED ? op->fn(c, op) : -ENOTCONN;
}

int gev__conn_post(gev_conn *c, gev__conn_op *op)
{
  int r;

  op->c = c;
  if (gev_loop_in_thread(c->loop)) {
    r = run_here(c, op);
    free(op);
    return r;
  }
  gev_conn_ref(c);
  if ((r = gev__loop_post_owned(c->loop, op_run, op, op_drop)) < 0) {
    op_drop(op);
    /* -ESHUTDOWN: the loop has stopped, and closed c itself. */
    return r == -ENOMEM ? -ENOMEM : -ENOTCONN;
  }
  return 0;
}

int gev__conn_call(gev_conn *c, int (*fn)(gev_conn *c, gev__conn_op *op),
                   uint64_t arg)
{
  gev__conn_op here = {c, fn, arg}, *op;

  if (gev_loop_in_thread(c->loop))
    return run_here(c, &here); /* no allocation in the loop's own thread */
  if (!(op = malloc(sizeof(*op))))
    return -ENOMEM;
  *op = here;
  return gev__conn_post(c, op);
}
