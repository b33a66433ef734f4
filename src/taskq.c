/* taskq.c - the loop's task queue: push, run, drop, trim (see taskq.h). */
#include "taskq.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

int gev__taskq_push(gev__taskq *q, gev_task_fn fn, void *arg, gev_task_fn drop)
{
  if (q->n == q->cap) {
    size_t ncap = q->cap ? q->cap * 2 : GEV__TASKQ_MIN;
    gev__task *nv;

    if (ncap > SIZE_MAX / sizeof(*nv))
      return -ENOMEM;
    if (!(nv = realloc(q->v, ncap * sizeof(*nv))))
      return -ENOMEM;
    q->v = nv;
    q->cap = ncap;
  }
  q->v[q->n++] = (gev__task){fn, arg, drop};
  return 0;
}

void gev__taskq_run(gev__taskq *q)
{
  for (size_t i = 0; i < q->n; i++)
    q->v[i].fn(q->v[i].arg);
  if (q->n > q->high)
    q->high = q->n;
  q->n = 0;
}

void gev__taskq_drop(gev__taskq *q)
{
  for (size_t i = 0; i < q->n; i++)
    if (q->v[i].drop)
      q->v[i].drop(q->v[i].arg);
  free(q->v);
  *q = (gev__taskq){0};
}

bool gev__taskq_holds(const gev__taskq *q)
{
  return q->cap > GEV__TASKQ_MIN;
}

/* The capacity push would have reached for `need` tasks: doublings of
 * GEV__TASKQ_MIN, so a trimmed queue that meets the same load again grows
 * to exactly where it was and the next trim leaves it alone. */
static size_t fit(size_t need)
{
  size_t cap = GEV__TASKQ_MIN;

  if (need == 0)
    return 0;
  while (cap < need)
    cap *= 2;
  return cap;
}

void gev__taskq_trim(gev__taskq *q)
{
  size_t cap = fit(q->n > q->high ? q->n : q->high);
  gev__task *nv;

  q->high = 0;
  if (cap >= q->cap)
    return;
  if (cap == 0) {
    free(q->v);
    q->v = NULL;
    q->cap = 0;
    return;
  }
  /* A shrinking realloc that fails leaves the old storage: keep it. */
  if ((nv = realloc(q->v, cap * sizeof(*nv)))) {
    q->v = nv;
    q->cap = cap;
  }
}
