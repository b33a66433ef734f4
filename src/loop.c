/* loop.c - the event loop: poll, run due timers, run posted tasks.
 *
 * Other threads reach a loop only through its task queue and timer heap,
 * both behind one mutex held for a few instructions, and wake it through its
 * eventfd. A pass is: wait for events (the timeout comes from the earliest
 * timer), dispatch them, run the timers that were due when the pass began,
 * run the tasks that were queued when the pass began, then call the handles
 * that asked for work after the pass (a connection flushing its output, or
 * dropping the loop's reference once closed).
 *
 * The loop knows handles, not handle types: it calls them only through
 * their gev__handle_ops, so no file here calls back into this one. */
#include "loop-internal.h"
#include "log-internal.h"
#include "server-internal.h" /* the options a worker loop takes */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

/* The loop running in this thread. initial-exec: a plain %fs-relative load
 * instead of a __tls_get_addr call in every gev_loop_in_thread (each
 * gev_conn_send asks). It costs 8 bytes of the static TLS that glibc keeps
 * for libraries loaded with dlopen, far below its surplus. */
static _Thread_local gev_loop *tls_loop
    __attribute__((tls_model("initial-exec")));

uint64_t gev__now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wake_io_cb(gev__io *io, unsigned events)
{
  uint64_t v;

  (void)events;
  /* The counter only says "look at the queue"; its value is irrelevant. */
  while (read(io->fd, &v, sizeof(v)) < 0 && errno == EINTR)
    ;
}

/* Everything that cannot fail. */
static void init_fields(gev_loop *l, gev_server *s, int index)
{
  l->server = s;
  l->index = index;
  l->wakefd = -1;
  l->poller.epfd = -1;
  atomic_init(&l->stop, false);
  atomic_init(&l->started, false);
  atomic_init(&l->async, false);
  atomic_init(&l->live, false);
  atomic_init(&l->st.seq, 0);
  atomic_init(&l->st.wanted, false);
  for (int i = 0; i < GEV__S_COUNT; i++)
    atomic_init(&l->st.pub[i], 0);
  atomic_init(&l->next_deadline, UINT64_MAX);
  atomic_init(&l->nconns, 0);
  gev__timers_init(&l->timers);
  gev__list_init(&l->handles);
  gev__list_init(&l->due);
  gev__list_init(&l->remote);
  gev__list_init(&l->active);
  atomic_init(&l->data, NULL);
  if (s && index >= 0) { /* the acceptor runs in the caller's thread */
    l->on_start = s->opt.on_loop_start;
    l->on_stop = s->opt.on_loop_stop;
  }
}

int gev__loop_new(gev_loop **out, gev_server *s, int index)
{
  gev_loop *l = calloc(1, sizeof(*l));
  int err = -ENOMEM;

  if (!l)
    return -ENOMEM;
  init_fields(l, s, index);
  l->fired = calloc(MAX_EVENTS, sizeof(*l->fired));
  if (!l->fired)
    goto out_free;
  if ((err = pthread_mutex_init(&l->mu, NULL)) != 0) {
    err = -err;
    goto out_free;
  }
  if ((err = gev__poller_init(&l->poller, MAX_EVENTS)) < 0)
    goto out_mutex;
  l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (l->wakefd < 0) {
    err = -errno;
    goto out_poller;
  }
  l->wake_io = (gev__io){.fd = l->wakefd, .cb = wake_io_cb};
  if ((err = gev__loop_io_add(l, &l->wake_io, GEV__EV_READ)) < 0)
    goto out_wakefd;
  if ((err = gev__bufs_init(&l->bufs, s ? s->max_buffer : 0)) < 0)
    goto out_wakefd;
  *out = l;
  return 0;

out_wakefd:
  close(l->wakefd);
out_poller:
  gev__poller_close(&l->poller);
out_mutex:
  pthread_mutex_destroy(&l->mu);
out_free:
  free(l->fired);
  free(l);
  return err;
}

void gev__loop_free(gev_loop *l)
{
  if (!l)
    return;
  /* A loop that never ran (or tasks queued after its last pass: none can
   * be, it refuses them once closed) may still hold tasks. */
  gev__taskq_drop(&l->pending);
  gev__taskq_drop(&l->running);
  gev__bufs_free(&l->bufs);
  close(l->wakefd);
  gev__poller_close(&l->poller);
  pthread_mutex_destroy(&l->mu);
  gev__timers_free(&l->timers);
  free(l->fired);
  free(l);
}

bool gev_loop_in_thread(const gev_loop *l)
{
  return l && tls_loop == l;
}

bool gev__in_a_loop(void)
{
  return tls_loop != NULL;
}

static uint64_t clock_us(clockid_t id)
{
  struct timespec ts;

  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The loop's counters, copied for other threads under a sequence lock
 * (odd while writing). Rare: on request, and when the loop ends. */
static void publish_stats(gev_loop *l)
{
  gev__stats *st = &l->st;
  unsigned seq = atomic_load_explicit(&st->seq, memory_order_relaxed);

  atomic_store_explicit(&st->wanted, false, memory_order_relaxed);
  st->v[GEV__S_BUSY_US] = clock_us(CLOCK_THREAD_CPUTIME_ID);
  st->v[GEV__S_WALL_US] = clock_us(CLOCK_MONOTONIC) - st->start_us;
  /* Release stores, not a fence (which ThreadSanitizer cannot follow):
   * each keeps the odd sequence before it; on x86 they are plain moves. */
  atomic_store_explicit(&st->seq, seq + 1, memory_order_relaxed);
  for (int i = 0; i < GEV__S_COUNT; i++)
    atomic_store_explicit(&st->pub[i], st->v[i], memory_order_release);
  atomic_store_explicit(&st->seq, seq + 2, memory_order_release);
}

bool gev__loop_stats_request(gev_loop *l)
{
  if (gev_loop_in_thread(l)) {
    publish_stats(l);
    return false;
  }
  if (!atomic_load(&l->live))
    return false;
  if (!atomic_exchange(&l->st.wanted, true))
    gev__loop_wake(l);
  return true;
}

void gev__loop_wake(gev_loop *l)
{
  uint64_t one = 1;
  ssize_t r;

  /* EAGAIN means the counter is saturated: the loop will wake anyway. */
  do
    r = write(l->wakefd, &one, sizeof(one));
  while (r < 0 && errno == EINTR);
}

void gev__loop_async(gev_loop *l)
{
  atomic_store(&l->async, true);
  gev__loop_wake(l);
}

/* Each handle is visited once even when a drain ends others (a handler
 * closing a connection's partner): they all move to a list of their own
 * and go back to the registry one by one, before their drain runs. */
void gev__loop_drain(gev_loop *l)
{
  gev__list todo;

  gev__assert_in_loop(l);
  l->draining = true;
  gev__list_move_all(&todo, &l->handles);
  while (!gev__list_empty(&todo)) {
    gev__handle *h = gev__container_of(todo.next, gev__handle, link);

    gev__list_remove(&h->link);
    gev__list_append(&l->handles, &h->link);
    if (h->ops->drain)
      h->ops->drain(h);
  }
}

void gev__loop_stop(gev_loop *l)
{
  atomic_store(&l->stop, true);
  gev__loop_wake(l);
}

/* Not asserted to the loop's thread: the loop's own eventfd and a server's
 * listeners are added before the loop runs. */
int gev__loop_io_add(gev_loop *l, gev__io *io, unsigned events)
{
  int r = gev__poller_add(&l->poller, io->fd, events, io);

  if (r == 0) {
    io->interest = events;
    io->registered = true;
  }
  return r;
}

int gev__loop_io_set(gev_loop *l, gev__io *io, unsigned events)
{
  gev__assert_in_loop(l);
  if (io->interest == events)
    return 0;
  int r = gev__poller_mod(&l->poller, io->fd, events, io);
  if (r == 0)
    io->interest = events;
  return r;
}

int gev__loop_io_del(gev_loop *l, gev__io *io)
{
  int r = 0;

  gev__assert_in_loop(l);
  if (io->registered)
    r = gev__poller_del(&l->poller, io->fd);
  io->interest = 0;
  io->registered = false;
  return r;
}

int gev_loop_post(gev_loop *l, gev_task_fn fn, void *arg)
{
  return gev__loop_post_owned(l, fn, arg, NULL);
}

int gev__loop_post_owned(gev_loop *l, gev_task_fn fn, void *arg,
                         gev_task_fn drop)
{
  bool in_loop, need_wake = false;
  int r;

  if (!l || !fn)
    return -EINVAL;
  in_loop = gev_loop_in_thread(l);
  pthread_mutex_lock(&l->mu);
  if (l->closed) {
    r = -ESHUTDOWN;
  } else if ((r = gev__taskq_push(&l->pending, fn, arg, drop)) == 0 &&
             !in_loop && !l->wake_pending) {
    l->wake_pending = true;
    need_wake = true;
  }
  pthread_mutex_unlock(&l->mu);
  if (r == 0 && in_loop)
    l->local_tasks = true;
  if (need_wake)
    gev__loop_wake(l);
  return r;
}

int gev__loop_call(gev_loop *l, gev_task_fn fn, void *arg, gev_task_fn drop)
{
  if (!gev_loop_in_thread(l))
    return gev__loop_post_owned(l, fn, arg, drop);
  fn(arg);
  return 0;
}

/* Under mu, after the heap changed. */
static void publish_next(gev_loop *l)
{
  uint64_t d;

  if (!gev__timers_next(&l->timers, &d))
    d = UINT64_MAX;
  atomic_store_explicit(&l->next_deadline, d, memory_order_relaxed);
}

static gev_timer_id add_timer(gev_loop *l, uint64_t delay, uint64_t interval,
                              gev_task_fn fn, void *arg)
{
  gev_timer_id id = 0;
  bool earliest = false;
  uint64_t now = gev__now_ms(), deadline, first;

  if (!l || !fn)
    return 0;
  deadline = now + delay < now ? UINT64_MAX : now + delay;
  pthread_mutex_lock(&l->mu);
  if (!l->closed) {
    earliest = !gev__timers_next(&l->timers, &first) || deadline < first;
    id = gev__timers_add(&l->timers, deadline, interval, fn, arg);
    publish_next(l);
  }
  pthread_mutex_unlock(&l->mu);
  /* A sleeping loop computed its timeout from the old earliest timer. */
  if (id && earliest && !gev_loop_in_thread(l))
    gev__loop_wake(l);
  return id;
}

gev_timer_id gev_loop_run_after(gev_loop *l, uint64_t delay_ms, gev_task_fn fn,
                                void *arg)
{
  return add_timer(l, delay_ms, 0, fn, arg);
}

gev_timer_id gev_loop_run_every(gev_loop *l, uint64_t interval_ms,
                                gev_task_fn fn, void *arg)
{
  if (interval_ms == 0)
    return 0;
  return add_timer(l, interval_ms, interval_ms, fn, arg);
}

int gev_loop_cancel(gev_loop *l, gev_timer_id id)
{
  int r;

  if (!l)
    return -EINVAL;
  pthread_mutex_lock(&l->mu);
  r = gev__timers_cancel(&l->timers, id);
  publish_next(l);
  pthread_mutex_unlock(&l->mu);
  return r;
}

static int next_timeout(gev_loop *l)
{
  uint64_t deadline, now;

  if (l->local_tasks || !gev__list_empty(&l->due) || atomic_load(&l->stop))
    return 0;
  /* A timer added from another thread after this read wakes the loop. */
  deadline = atomic_load_explicit(&l->next_deadline, memory_order_relaxed);
  if (deadline == UINT64_MAX)
    return -1;
  now = gev__now_ms();
  if (deadline <= now)
    return 0;
  return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

/* Runs the timers due at the start of the pass. A timer added or re-armed by
 * a callback waits for the next pass, so a zero-delay timer that re-adds
 * itself cannot starve I/O. */
/* How late the earliest due timer fires: the loop's lag, kept as the
 * worst of the current second and of the one before. */
static void note_lag(gev_loop *l, uint64_t deadline)
{
  uint64_t *v = l->st.v, sec = l->now_ms / 1000;
  uint64_t late = l->now_ms > deadline ? l->now_ms - deadline : 0;

  if (v[GEV__S_LAG_SEC] != sec) {
    v[GEV__S_LAG_PREV] = v[GEV__S_LAG_SEC] + 1 == sec ? v[GEV__S_LAG_MS] : 0;
    v[GEV__S_LAG_MS] = 0;
    v[GEV__S_LAG_SEC] = sec;
  }
  if (late > v[GEV__S_LAG_MS])
    v[GEV__S_LAG_MS] = late;
}

static void run_timers(gev_loop *l)
{
  gev__timer_fire f;
  uint64_t cutoff;

  note_lag(l, atomic_load_explicit(&l->next_deadline, memory_order_relaxed));
  pthread_mutex_lock(&l->mu);
  cutoff = l->timers.seq;
  for (;;) {
    if (!gev__timers_pop_due(&l->timers, l->now_ms, cutoff, &f))
      break;
    pthread_mutex_unlock(&l->mu);
    f.fn(f.arg);
    l->st.v[GEV__S_TIMERS_FIRED]++;
    pthread_mutex_lock(&l->mu);
    gev__timers_done(&l->timers, f.id, l->now_ms);
  }
  publish_next(l);
  pthread_mutex_unlock(&l->mu);
}

static void trim_tasks(void *loop);

/* A queue's storage has grown: trim it a while later (taskq.h). Fails only
 * when the loop is finishing or out of memory; the next pass with tasks
 * tries again, or gev__loop_free frees the storage anyway. */
static void watch_tasks(gev_loop *l, bool grown)
{
  if (grown && !l->tasks_trim_armed &&
      gev_loop_run_after(l, GEV__TASKQ_TRIM_MS, trim_tasks, l))
    l->tasks_trim_armed = true;
}

/* Both storages take turns as pending, and once tasks stop coming one of
 * them stays there: an empty pending is swapped out to be trimmed, so the
 * realloc (or free) runs outside the lock that posters wait on. */
static void trim_tasks(void *loop)
{
  gev_loop *l = loop;
  gev__taskq q;
  bool swapped, grown;

  l->tasks_trim_armed = false;
  gev__taskq_trim(&l->running);
  pthread_mutex_lock(&l->mu);
  swapped = l->pending.n == 0;
  if (swapped) {
    q = l->pending;
    l->pending = l->running;
    l->running = q;
  }
  grown = gev__taskq_holds(&l->pending);
  pthread_mutex_unlock(&l->mu);
  if (swapped)
    gev__taskq_trim(&l->running);
  watch_tasks(l, grown || gev__taskq_holds(&l->running));
}

/* ---- handles ---------------------------------------------------------- */

void gev__handle_register(gev__handle *h)
{
  gev_loop *l = h->loop;

  gev__assert_in_loop(l);
  gev__list_append(&l->handles, &h->link);
  atomic_store(&h->remote_ok, true);
}

/* Off the registry and out of other threads' reach; an after_pass already
 * due still runs. */
static void leave_registry(gev__handle *h)
{
  gev_loop *l = h->loop;

  gev__list_remove(&h->link);
  pthread_mutex_lock(&l->mu);
  atomic_store(&h->remote_ok, false);
  gev__list_remove(&h->remote);
  pthread_mutex_unlock(&l->mu);
}

void gev__handle_unregister(gev__handle *h)
{
  leave_registry(h);
  gev__list_remove(&h->due); /* its memory may go: no after_pass either */
}

int gev__handle_schedule_remote(gev__handle *h)
{
  gev_loop *l = h->loop;
  bool wake = false;
  int r = 0;

  pthread_mutex_lock(&l->mu);
  if (l->closed || !atomic_load(&h->remote_ok)) {
    r = -ESHUTDOWN;
  } else if (!gev__list_linked(&h->remote)) {
    gev__list_append(&l->remote, &h->remote);
    wake = !l->wake_pending;
    l->wake_pending = true;
  }
  pthread_mutex_unlock(&l->mu);
  if (wake)
    gev__loop_wake(l);
  return r;
}

int gev__loop_call_or_schedule(gev_loop *l, gev_task_fn fn, void *arg,
                               gev_task_fn drop, gev__handle *h)
{
  int err = gev__loop_call(l, fn, arg, drop);

  if (err == -ENOMEM)
    gev__handle_schedule_remote(h);
  return err;
}

/* ---- tasks -------------------------------------------------------------- */

/* Runs the tasks queued when the pass began: one swap, so tasks that post
 * tasks cannot keep the loop from polling. The handles other threads
 * scheduled join the pass's after-pass work. */
static void run_tasks(gev_loop *l)
{
  gev__taskq q;

  pthread_mutex_lock(&l->mu);
  q = l->pending;
  l->pending = l->running;
  l->running = q;
  l->pending.n = 0;
  l->wake_pending = false;
  while (!gev__list_empty(&l->remote)) {
    gev__handle *h = gev__container_of(l->remote.next, gev__handle, remote);

    gev__list_remove(&h->remote);
    gev__handle_schedule(h);
  }
  pthread_mutex_unlock(&l->mu);
  l->local_tasks = false;
  l->st.v[GEV__S_TASKS_RUN] += q.n;
  gev__taskq_run(&l->running);
  watch_tasks(l, gev__taskq_holds(&l->running));
}

/* Calls the handles that asked for work after the pass: a snapshot, so
 * work they schedule meanwhile waits for the next pass (which then polls
 * without sleeping) instead of keeping this one going. */
static void run_due(gev_loop *l)
{
  gev__list batch;

  if (gev__list_empty(&l->due))
    return;
  gev__list_move_all(&batch, &l->due);
  while (!gev__list_empty(&batch)) {
    gev__handle *h = gev__container_of(batch.next, gev__handle, due);

    gev__list_remove(&h->due);
    h->ops->after_pass(h);
  }
}

/* A poller that fails for any reason but EINTR (which it reports as no
 * events) will fail again at once: looping on it would spin. The loop
 * stops and its runner returns the error. */
static void poller_failed(gev_loop *l, int err)
{
  if (!l->error) {
    l->error = err;
    gev__log(GEV_LOG_ERROR, l, NULL, "the poller failed (%s): the loop stops",
             gev_strerror(err));
  }
  atomic_store(&l->stop, true);
}

static void run_pass(gev_loop *l)
{
  bool woke = false;
  int n = gev__poller_wait(&l->poller, l->fired, next_timeout(l));

  l->now_ms = gev__now_ms();
  l->st.v[GEV__S_PASSES]++;
  if (n < 0)
    poller_failed(l, n);
  for (int i = 0; i < n; i++) {
    gev__io *io = l->fired[i].data;
    if (io == &l->wake_io)
      woke = true;
    io->cb(io, l->fired[i].events);
  }
  if (l->now_ms >=
      atomic_load_explicit(&l->next_deadline, memory_order_relaxed))
    run_timers(l);
  if (woke && atomic_load(&l->async) && atomic_exchange(&l->async, false))
    l->async_fn(l->async_arg);
  if (woke && atomic_load_explicit(&l->st.wanted, memory_order_relaxed))
    publish_stats(l); /* a reader asked (it woke the loop) */
  if (woke || l->local_tasks)
    run_tasks(l);
  run_due(l);
}

int gev__loop_run(gev_loop *l)
{
  gev_loop *prev = tls_loop;

  tls_loop = l;
  l->now_ms = gev__now_ms();
  l->st.start_us = clock_us(CLOCK_MONOTONIC);
  atomic_store(&l->live, true);
  if (l->on_start) { /* before the first pass: before any connection */
    l->hooked = true;
    l->on_start(l);
  }
  do
    run_pass(l);
  while (!atomic_load(&l->stop));
  /* Still live for readers of the figures: gev__loop_finish may close
   * connections, and a reader that saw their on_close waits for the final
   * publication, which ends the loop's life. */
  tls_loop = prev;
  return l->error;
}

/* Every registered handle is stopped once. A stop may end other handles
 * too (a client closing its connection): each leaves the registry as it
 * ends, so taking the first one until none is left visits each once. */
static void stop_handles(gev_loop *l)
{
  while (!gev__list_empty(&l->handles)) {
    gev__handle *h = gev__container_of(l->handles.next, gev__handle, link);

    /* Its after_pass, if due, still runs (a close may wait in it). */
    leave_registry(h);
    h->ops->stop(h);
  }
}

void gev__loop_finish(gev_loop *l)
{
  gev_loop *prev = tls_loop;

  tls_loop = l;
  l->finishing = true; /* nothing new attaches or starts from here on */
  stop_handles(l);
  run_due(l);
  if (l->hooked && l->on_stop) { /* every on_close has run; tasks it posts
                                    still run */
    l->hooked = false;
    l->on_stop(l);
  }
  pthread_mutex_lock(&l->mu);
  l->closed = true;
  pthread_mutex_unlock(&l->mu);
  /* Tasks queued before the close may hold references, or start handles
   * (which see `finishing` and end at once). */
  run_tasks(l);
  stop_handles(l);
  run_due(l);
  publish_stats(l); /* the final figures, for readers after the end */
  atomic_store(&l->live, false);
  tls_loop = prev;
}

/* ---- per-loop data and time ------------------------------------------- */

void gev_loop_set_data(gev_loop *l, void *data)
{
  if (l)
    atomic_store_explicit(&l->data, data, memory_order_release);
}

void *gev_loop_data(const gev_loop *l)
{
  return l ? atomic_load_explicit(&((gev_loop *)l)->data, memory_order_acquire)
           : NULL;
}

/* Elsewhere than in its thread the cached value would be a data race, and
 * stale by up to a whole pass: those callers read the clock. */
uint64_t gev_loop_now_ms(const gev_loop *l)
{
  if (l && gev_loop_in_thread(l))
    return l->now_ms;
  return gev__now_ms();
}

/* ---- standalone loops ------------------------------------------------- */

int gev_loop_new(gev_loop **out)
{
  if (!out)
    return -EINVAL;
  return gev__loop_new(out, NULL, -1);
}

int gev_loop_run(gev_loop *l)
{
  bool expected = false;
  int err;

  if (!l || l->server)
    return -EINVAL;
  if (!atomic_compare_exchange_strong(&l->started, &expected, true))
    return -EALREADY;
  err = gev__loop_run(l);
  gev__loop_finish(l);
  return err;
}

void gev_loop_stop(gev_loop *l)
{
  int saved = errno; /* may run in a signal handler */

  if (l)
    gev__loop_stop(l);
  errno = saved;
}

void gev_loop_free(gev_loop *l)
{
  if (l && !l->server)
    gev__loop_free(l);
}
