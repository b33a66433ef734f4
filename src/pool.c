/* pool.c - gev_pool: N persistent clients to one address over a server's
 * worker loops (or one loop), and "a connected one from this loop".
 *
 * Members are stored by loop: group g holds the members of one loop,
 * contiguously, with the loop's round-robin cursor. A member's connection
 * pointer and the cursors are touched only by that loop's thread (the
 * clients tell their watcher there); the connected count is atomic.
 *
 * Ownership: refs counts the caller (until gev_pool_free) and every
 * member whose client the loop has not let go of yet (its GONE, the last
 * thing a client tells its watcher); the last one frees the pool. */
#include "conn-internal.h"

#include <errno.h>
#include <stdlib.h>

typedef struct member {
  gev_pool *p;
  gev_client *cl;
  gev_conn *conn; /* open, until its on_close; the loop's thread */
} member;

typedef struct group {
  gev_loop *l;
  int first, n;
  int next; /* where the next gev_pool_get starts; the loop's thread */
} group;

struct gev_pool {
  atomic_int refs;
  atomic_int connected;
  int size, ngroups;
  member *m;
  group *g;
};

static void unref(gev_pool *p)
{
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(p->m);
  free(p->g);
  free(p);
}

static void watch(void *arg, int ev, gev_conn *c)
{
  member *m = arg;

  switch (ev) {
  case GEV__CLIENT_UP:
    m->conn = c;
    atomic_fetch_add(&m->p->connected, 1);
    break;
  case GEV__CLIENT_DOWN:
    m->conn = NULL;
    atomic_fetch_sub(&m->p->connected, 1);
    break;
  default: unref(m->p); break; /* GONE: the member's share */
  }
}

/* Members dealt to loops in turn: member i to loop i % ngroups, stored
 * by loop. */
static int layout(gev_pool *p, const gev_pool_options *opt)
{
  int first = 0;

  p->m = calloc((size_t)p->size, sizeof(*p->m));
  p->g = calloc((size_t)p->ngroups, sizeof(*p->g));
  if (!p->m || !p->g)
    return -ENOMEM;
  for (int g = 0; g < p->ngroups; g++) {
    group *gr = &p->g[g];
    gr->l = opt->server ? gev_server_worker_loop(opt->server, g) : opt->loop;
    gr->first = first;
    gr->n = p->size / p->ngroups + (g < p->size % p->ngroups);
    first += gr->n;
  }
  for (int i = 0; i < p->size; i++)
    p->m[i].p = p;
  return 0;
}

/* Starts every member; on failure stops those started. */
static int start_members(gev_pool *p, const gev_handler *h,
                         const gev_client_options *co)
{
  for (int g = 0; g < p->ngroups; g++) {
    for (int k = 0; k < p->g[g].n; k++) {
      int i = p->g[g].first + k;
      int err = gev__client_new_watched(&p->m[i].cl, p->g[g].l, h, co, watch,
                                        &p->m[i]);
      if (err < 0) {
        /* This member and the later ones will never say GONE. */
        atomic_fetch_sub(&p->refs, p->size - i);
        for (int j = 0; j < i; j++)
          gev_client_free(p->m[j].cl);
        return err;
      }
    }
  }
  return 0;
}

int gev_pool_new(gev_pool **out, const gev_handler *h,
                 const gev_pool_options *opt)
{
  gev_pool *p;
  int err;

  if (out)
    *out = NULL;
  if (!out || !h || !opt || !opt->client.connect.address ||
      !opt->server == !opt->loop || opt->size < 0)
    return -EINVAL;
  if (!(p = calloc(1, sizeof(*p))))
    return -ENOMEM;
  p->ngroups = opt->server ? gev_server_num_loops(opt->server) : 1;
  p->size = opt->size ? opt->size : p->ngroups;
  if (p->size < p->ngroups)
    p->ngroups = p->size; /* loops past the members carry none */
  atomic_init(&p->refs, 1 + p->size);
  atomic_init(&p->connected, 0);
  if ((err = layout(p, opt)) < 0) {
    free(p->m);
    free(p->g);
    free(p);
    return err;
  }
  if ((err = start_members(p, h, &opt->client)) < 0) {
    unref(p);
    return err;
  }
  *out = p;
  return 0;
}

static group *group_of(gev_pool *p, gev_loop *l)
{
  /* A server's worker loop i carries group i. */
  if (l->index >= 0 && l->index < p->ngroups && p->g[l->index].l == l)
    return &p->g[l->index];
  for (int g = 0; g < p->ngroups; g++)
    if (p->g[g].l == l)
      return &p->g[g];
  return NULL;
}

gev_conn *gev_pool_get(gev_pool *p, gev_loop *l)
{
  group *g;

  if (!p || !l || !gev_loop_in_thread(l) || !(g = group_of(p, l)))
    return NULL;
  for (int k = 0; k < g->n; k++) {
    int at = (g->next + k) % g->n;
    gev_conn *c = p->m[g->first + at].conn;

    if (c && gev_conn_connected(c)) {
      g->next = (at + 1) % g->n;
      return c;
    }
  }
  return NULL;
}

int gev_pool_connected(const gev_pool *p)
{
  return p ? atomic_load(&((gev_pool *)p)->connected) : 0;
}

int gev_pool_size(const gev_pool *p)
{
  return p ? p->size : 0;
}

void gev_pool_free(gev_pool *p)
{
  if (!p)
    return;
  for (int i = 0; i < p->size; i++)
    gev_client_free(p->m[i].cl);
  unref(p);
}
