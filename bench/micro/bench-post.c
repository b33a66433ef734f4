/*
 * bench-post.c - cross-thread task throughput (see bench.h).
 *
 * A real server (gev_server_new + gev_server_start on its own thread, one
 * worker loop, no connections) receives `iters` tasks posted with
 * gev_loop_post to worker loop 0 from 1 or more producer threads. Each task
 * counts; the time is from the first post until the worker has run the last
 * task, so it covers the lock, the queue swap, the eventfd wake-ups and the
 * task calls. Server start-up and shutdown are not timed.
 */
#include "bench.h"

#include <gev/gev.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

typedef struct post_ctx {
  gev_loop *loop;
  uint64_t count, target; /* the worker's thread only, once started */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool reached;
  atomic_int failed;
} post_ctx;

typedef struct producer {
  pthread_t th;
  post_ctx *ctx;
  uint64_t n;
} producer;

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void count_task(void *arg)
{
  post_ctx *x = arg;

  if (++x->count == x->target) {
    pthread_mutex_lock(&x->mu);
    x->reached = true;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
  }
}

static void *produce(void *arg)
{
  producer *p = arg;

  for (uint64_t i = 0; i < p->n; i++)
    if (gev_loop_post(p->ctx->loop, count_task, p->ctx) != 0) {
      atomic_fetch_add(&p->ctx->failed, 1);
      break;
    }
  return NULL;
}

static void *serve(void *arg)
{
  gev_server_start(arg);
  return NULL;
}

/* Posts `total` tasks from `nprod` threads and waits until all ran.
 * Returns the seconds taken, or -1. */
static double post_round(post_ctx *x, size_t nprod, uint64_t total)
{
  producer prod[16];
  double t0, t1;

  if (nprod == 0 || nprod > 16)
    return -1;
  if (total == 0)
    return 0;
  /* The worker is idle here, and its next task runs after the post's
   * lock: it sees these values. */
  x->count = 0;
  x->target = total;
  x->reached = false;
  t0 = now_s();
  for (size_t i = 0; i < nprod; i++) {
    prod[i] = (producer){.ctx = x, .n = total / nprod + (i < total % nprod)};
    if (pthread_create(&prod[i].th, NULL, produce, &prod[i]) != 0)
      return -1; /* (leaks the started ones; never happens in practice) */
  }
  for (size_t i = 0; i < nprod; i++)
    pthread_join(prod[i].th, NULL);
  if (atomic_load(&x->failed))
    return -1;
  pthread_mutex_lock(&x->mu);
  while (!x->reached)
    pthread_cond_wait(&x->cv, &x->mu);
  pthread_mutex_unlock(&x->mu);
  t1 = now_s();
  return t1 - t0;
}

double gev_bench_loop_post(size_t producers, uint64_t iters)
{
  gev_handler h = {0};
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 1};
  gev_server *s;
  pthread_t th;
  post_ctx x = {0};
  double secs = -1;

  if (gev_server_new(&s, &h, &opt) != 0)
    return -1;
  x.loop = gev_server_worker_loop(s, 0);
  pthread_mutex_init(&x.mu, NULL);
  pthread_cond_init(&x.cv, NULL);
  atomic_init(&x.failed, 0);
  if (pthread_create(&th, NULL, serve, s) != 0) {
    gev_server_free(s);
    return -1;
  }
  /* Warm-up (untimed): the worker thread runs and its queue has room. */
  if (post_round(&x, 1, 1024) >= 0)
    secs = post_round(&x, producers, iters);
  gev_server_stop(s);
  pthread_join(th, NULL);
  gev_server_free(s);
  pthread_cond_destroy(&x.cv);
  pthread_mutex_destroy(&x.mu);
  return secs;
}
