/* test-wake.c - gev_conn_wake (on_message again, from any thread, with
 * whatever `in` holds) and gev_conn_abort (close at once, output dropped,
 * RST). */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

/* The server's one connection, referenced for the test thread. */
static _Atomic(gev_conn *) the_conn;
static atomic_int calls, empty_calls, inside, closes, close_inside, bad;
static atomic_int ready;    /* set by the test: held input may go */
static atomic_int wake_seq; /* the waker's last sequence number */
static atomic_int seen_seq; /* the highest one on_message saw */
static atomic_int abort_on; /* the handler aborts on input */

/* Check runs every case in one process without fork (valgrind): each
 * starts from zero. */
static void reset(void)
{
  atomic_store(&the_conn, NULL);
  atomic_store(&calls, 0);
  atomic_store(&empty_calls, 0);
  atomic_store(&inside, 0);
  atomic_store(&closes, 0);
  atomic_store(&close_inside, 0);
  atomic_store(&bad, 0);
  atomic_store(&ready, 0);
  atomic_store(&wake_seq, 0);
  atomic_store(&seen_seq, 0);
  atomic_store(&abort_on, 0);
}

static void w_connect(gev_conn *c)
{
  gev_conn_ref(c);
  atomic_store(&the_conn, c);
}

/* Consumes input only once `ready`; replies "woken" to an empty wake. */
static void w_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  atomic_fetch_add(&inside, 1);
  atomic_fetch_add(&calls, 1);
  atomic_store(&seen_seq, atomic_load(&wake_seq));
  if (ringbuffer_empty(in)) {
    atomic_fetch_add(&empty_calls, 1);
    if (atomic_load(&ready) == 2)
      ringbuffer_write(out, "woken\n", 6);
  } else if (atomic_load(&abort_on)) {
    static char big[100000];
    ringbuffer_retrieve_all(in);
    ringbuffer_write(out, big, sizeof(big)); /* dropped by the abort */
    if (gev_conn_abort(c) != 0 || gev_conn_abort(c) != -ENOTCONN ||
        gev_conn_connected(c) || gev_conn_send(c, "x", 1) != -ENOTCONN)
      atomic_fetch_add(&bad, 1);
  } else if (atomic_load(&ready)) {
    ringbuffer_move(out, in, ringbuffer_len(in));
  }
  atomic_fetch_sub(&inside, 1);
}

static void w_close(gev_conn *c)
{
  (void)c;
  if (atomic_load(&inside))
    atomic_fetch_add(&close_inside, 1);
  atomic_fetch_add(&closes, 1);
}

static const gev_handler wake_handler = {w_connect, w_message, w_close, NULL,
                                         NULL};

static th_server *serve(int *fd)
{
  gev_options opt = {.num_loops = 2};
  th_server *t = th_start(&wake_handler, &opt);

  *fd = th_connect(t->port);
  ck_assert_int_ge(*fd, 0);
  for (int i = 0; i < 10000 && !atomic_load(&the_conn); i++)
    usleep(1000);
  ck_assert_ptr_nonnull(atomic_load(&the_conn));
  return t;
}

static void finish(th_server *t, int fd)
{
  gev_conn *c = atomic_load(&the_conn);

  close(fd);
  th_stop(t);
  gev_conn_unref(c);
}

/* From another thread, with nothing in `in`: on_message runs, and what it
 * appends to `out` is sent. */
START_TEST(test_wake_empty)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  char buf[6];

  atomic_store(&ready, 2);
  ck_assert_int_eq(gev_conn_wake(atomic_load(&the_conn)), 0);
  ck_assert(th_read_exact(fd, buf, 6));
  ck_assert(memcmp(buf, "woken\n", 6) == 0);
  ck_assert_int_ge(atomic_load(&empty_calls), 1);
  finish(t, fd);
}
END_TEST

/* Held input is shown again by a wake, once the state it waited for has
 * changed elsewhere; without the wake it waits. */
START_TEST(test_wake_held_input)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  char buf[5];
  int before;

  ck_assert(th_write_all(fd, "hello", 5));
  ck_assert(th_wait_int((const volatile int *)&calls, 1, 10000));
  usleep(50000);
  before = atomic_load(&calls);
  ck_assert_int_eq(before, 1); /* held: nothing shows it again */
  atomic_store(&ready, 1);
  ck_assert_int_eq(gev_conn_wake(atomic_load(&the_conn)), 0);
  ck_assert(th_read_exact(fd, buf, 5));
  ck_assert(memcmp(buf, "hello", 5) == 0);
  finish(t, fd);
}
END_TEST

/* Many wakes from two threads: merged, and the last one is always
 * followed by a call that sees it (TSan checks the rest). */
typedef struct waker {
  int n;
} waker;

static void *wake_main(void *arg)
{
  waker *w = arg;

  for (int i = 0; i < w->n; i++) {
    atomic_fetch_add(&wake_seq, 1);
    if (gev_conn_wake(atomic_load(&the_conn)) != 0)
      atomic_fetch_add(&bad, 1);
  }
  return NULL;
}

static bool saw_last(void *arg)
{
  (void)arg;
  return atomic_load(&seen_seq) == atomic_load(&wake_seq);
}

START_TEST(test_wake_storm)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  waker w = {20000};
  pthread_t a, b;

  pthread_create(&a, NULL, wake_main, &w);
  pthread_create(&b, NULL, wake_main, &w);
  th_join(a, 60);
  th_join(b, 60);
  ck_assert(th_wait_until(saw_last, NULL, 10000));
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_ge(atomic_load(&calls), 1);
  ck_assert_int_le(atomic_load(&calls), 40000);
  finish(t, fd);
}
END_TEST

/* In the loop's own thread: not inside the call, after the pass. */
typedef struct in_loop {
  gev_conn *c;
  int calls_during;
  int r;
} in_loop;

static void wake_task(void *arg)
{
  in_loop *x = arg;
  int before = atomic_load(&calls);

  x->r = gev_conn_wake(x->c);
  x->calls_during = atomic_load(&calls) - before;
}

START_TEST(test_wake_in_loop)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  in_loop x = {atomic_load(&the_conn), -1, -1};

  th_run_in_loop(gev_conn_loop(x.c), wake_task, &x);
  ck_assert_int_eq(x.r, 0);
  ck_assert_int_eq(x.calls_during, 0);
  ck_assert(th_wait_int((const volatile int *)&calls, 1, 10000));
  finish(t, fd);
}
END_TEST

/* A paused connection is woken once it resumes. */
START_TEST(test_wake_paused)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  gev_conn *c = atomic_load(&the_conn);

  ck_assert_int_eq(gev_conn_pause_read(c), 0);
  th_run_in_loop(gev_conn_loop(c), th_noop, NULL); /* the pause is in */
  ck_assert_int_eq(gev_conn_wake(c), 0);
  usleep(100000);
  ck_assert_int_eq(atomic_load(&calls), 0);
  ck_assert_int_eq(gev_conn_resume_read(c), 0);
  ck_assert(th_wait_int((const volatile int *)&calls, 1, 10000));
  finish(t, fd);
}
END_TEST

/* ---- abort ------------------------------------------------------------ */

/* Inside on_message: the reply it appended is dropped, the peer gets a
 * reset, on_close runs after the callback, not inside it. */
START_TEST(test_abort_in_handler)
{
  reset();
  int fd;
  th_server *t = serve(&fd);
  char buf[16];
  ssize_t n;

  atomic_store(&abort_on, 1);
  ck_assert(th_write_all(fd, "x", 1));
  n = recv(fd, buf, sizeof(buf), 0);
  ck_assert_int_eq(n, -1);
  ck_assert_int_eq(errno, ECONNRESET);
  ck_assert(th_wait_int((const volatile int *)&closes, 1, 10000));
  ck_assert_int_eq(atomic_load(&close_inside), 0);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert(!gev_conn_connected(atomic_load(&the_conn)));
  ck_assert_int_eq(gev_conn_abort(atomic_load(&the_conn)), -ENOTCONN);
  finish(t, fd);
}
END_TEST

/* From another thread, on a connection whose peer does not read: a
 * graceful close would wait for ever; the abort closes at once. */
START_TEST(test_abort_stuck_peer)
{
  reset();
  static char chunk[65536];
  /* Far more than the kernel's buffers of a loopback pair hold. */
  gev_options opt = {.num_loops = 1, .max_buffer = 32 << 20};
  th_server *t = th_start(&wake_handler, &opt);
  int fd = th_connect(t->port), sent = 0, rcv = 4096;
  gev_conn *c;

  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  for (int i = 0; i < 10000 && !atomic_load(&the_conn); i++)
    usleep(1000);
  c = atomic_load(&the_conn);
  ck_assert_ptr_nonnull(c);
  while (sent < 1000 && gev_conn_send(c, chunk, sizeof(chunk)) == 0)
    sent++;
  ck_assert_int_lt(sent, 1000); /* the output filled up: the peer is stuck */
  ck_assert_int_ge(sent, 256);
  ck_assert_int_eq(gev_conn_close(c), 0);
  usleep(200000);
  ck_assert_int_eq(atomic_load(&closes), 0); /* the close waits on the peer */
  ck_assert_int_eq(gev_conn_abort(c), 0);
  ck_assert(th_wait_int((const volatile int *)&closes, 1, 10000));
  ck_assert_int_eq(gev_conn_send(c, "x", 1), -ENOTCONN);
  finish(t, fd);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"wake_empty", test_wake_empty, 30},
      {"wake_held_input", test_wake_held_input, 30},
      {"wake_storm", test_wake_storm, 120},
      {"wake_in_loop", test_wake_in_loop, 30},
      {"wake_paused", test_wake_paused, 30},
      {"abort_in_handler", test_abort_in_handler, 30},
      {"abort_stuck_peer", test_abort_stuck_peer, 30},
  };

  return th_run(th_suite("wake", cases, sizeof(cases) / sizeof(cases[0])));
}
