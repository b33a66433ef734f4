/* broadcast.c - gev_server_foreach_conn and gev_server_broadcast.
 *
 * One visit is one allocation: the caller's function and argument, a
 * count of the loops still to visit (plus one for the caller while it
 * posts), and one leg per worker loop that its task points at. Whoever
 * brings the count to zero (the last loop, a loop dropping its task
 * unrun, or the caller) runs done and frees the visit. A broadcast is a
 * visit whose argument is the message. */
#include "conn-internal.h"
#include "log-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct visit visit;

typedef struct leg {
  visit *v;
  gev_loop *l;
} leg;

struct visit {
  gev_conn_visit_fn fn;
  void *arg;
  void (*done)(void *arg);
  gev_server *s;
  atomic_int pending;
  leg legs[];
};

static void release(visit *v)
{
  if (atomic_fetch_sub_explicit(&v->pending, 1, memory_order_acq_rel) != 1)
    return;
  if (v->done)
    v->done(v->arg);
  free(v);
}

/* The loop's visible connections, each referenced, so that whatever fn
 * does (close one, free a client whose handle is next in the registry)
 * leaves the list intact. NULL when there are none or no memory. */
static gev_conn **snapshot(gev_loop *l, gev_server *s, size_t *n)
{
  gev_conn **v;
  size_t k = 0, cap = 0;

  for (gev__list *e = l->handles.next; e != &l->handles; e = e->next) {
    gev_conn *c = gev__conn_of_handle(gev__container_of(e, gev__handle, link));
    cap += c && c->server == s && gev__conn_visible(c);
  }
  *n = 0;
  if (cap == 0)
    return NULL;
  if (!(v = malloc(cap * sizeof(*v)))) {
    gev__log(GEV_LOG_WARN, l, NULL,
             "out of memory: %zu connections not visited", cap);
    return NULL;
  }
  for (gev__list *e = l->handles.next; e != &l->handles && k < cap;
       e = e->next) {
    gev_conn *c = gev__conn_of_handle(gev__container_of(e, gev__handle, link));
    if (c && c->server == s && gev__conn_visible(c)) {
      gev_conn_ref(c);
      v[k++] = c;
    }
  }
  *n = k;
  return v;
}

static void visit_task(void *arg)
{
  leg *g = arg;
  visit *v = g->v;
  size_t n;
  gev_conn **cs = snapshot(g->l, v->s, &n);

  for (size_t i = 0; i < n; i++) {
    if (gev__conn_visible(cs[i])) /* an earlier visit may have closed it */
      v->fn(cs[i], v->arg);
    gev_conn_unref(cs[i]);
  }
  free(cs);
  release(v);
}

static void visit_drop(void *arg)
{
  release(((leg *)arg)->v);
}

int gev_server_foreach_conn(gev_server *s, gev_conn_visit_fn fn, void *arg,
                            void (*done)(void *arg))
{
  int n = gev_server_num_loops(s), err = 0;
  visit *v;

  if (!s || !fn)
    return -EINVAL;
  if (!(v = malloc(sizeof(*v) + (size_t)n * sizeof(leg))))
    return -ENOMEM;
  *v = (visit){.fn = fn, .arg = arg, .done = done, .s = s};
  atomic_init(&v->pending, n + 1); /* + the caller's, until all are posted */
  for (int i = 0; i < n; i++) {
    v->legs[i] = (leg){v, gev_server_worker_loop(s, i)};
    /* A refused post (the loop stopped, or no memory) is that loop's
     * share: done still runs, so this is not -ENOMEM, which tells the
     * caller that nothing will (gev_server_broadcast frees on it). */
    if (gev__loop_call(v->legs[i].l, visit_task, &v->legs[i], visit_drop) < 0) {
      err = -ESHUTDOWN;
      release(v);
    }
  }
  release(v);
  return err;
}

/* ---- broadcast -------------------------------------------------------- */

typedef struct message {
  const gev_conn *skip;
  size_t n;
  char data[];
} message;

static void send_one(gev_conn *c, void *arg)
{
  message *m = arg;

  if (c != m->skip)
    gev_conn_send(c, m->data, m->n); /* -ENOBUFS: this reader misses it */
}

int gev_server_broadcast(gev_server *s, const void *p, size_t n,
                         const gev_conn *skip)
{
  message *m;
  int err;

  if (!s || (!p && n))
    return -EINVAL;
  if (n == 0)
    return 0;
  if (!(m = malloc(sizeof(*m) + n)))
    return -ENOMEM;
  m->skip = skip;
  m->n = n;
  memcpy(m->data, p, n);
  if ((err = gev_server_foreach_conn(s, send_one, m, free)) == -ENOMEM)
    free(m);
  return err;
}
