/* test-pool.c - gev_pool: members spread over a server's worker loops or
 * on one loop, kept connected with backoff, "a connected one from this
 * loop" in turn, the connected count, freeing from any thread. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

enum { LOOPS = 3, SIZE = 6 };

static atomic_int echoed, closes;

/* Check runs every case in one process without fork (valgrind): each
 * starts from zero. */
static void reset(void)
{
  atomic_store(&echoed, 0);
  atomic_store(&closes, 0);
  th_reset_counters();
}

static void m_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  atomic_fetch_add(&echoed, (int)ringbuffer_len(in));
  ringbuffer_retrieve_all(in);
}

static void m_close(gev_conn *c)
{
  (void)c;
  atomic_fetch_add(&closes, 1);
}

static const gev_handler member_handler = {NULL, m_message, m_close, NULL,
                                           NULL};

typedef struct want_connected {
  gev_pool *p;
  int n;
} want_connected;

static bool connected_is(void *arg)
{
  want_connected *w = arg;
  return gev_pool_connected(w->p) == w->n;
}

static void wait_connected(gev_pool *p, int n)
{
  want_connected w = {p, n};
  ck_assert_msg(th_wait_until(connected_is, &w, 15000), "connected %d, want %d",
                gev_pool_connected(p), n);
}

static void client_opts(gev_pool_options *o, int port, uint64_t retry_ms)
{
  static char addr[32];

  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  o->client.connect.address = addr;
  o->client.retry_min_ms = retry_ms;
  o->client.retry_max_ms = retry_ms;
}

/* In a worker loop: what gev_pool_get returns, several times. */
typedef struct gets {
  gev_pool *p;
  gev_loop *l;
  gev_conn *got[6];
  int sent;
} gets;

static void get_task(void *arg)
{
  gets *g = arg;

  for (int i = 0; i < 6; i++)
    g->got[i] = gev_pool_get(g->p, g->l);
  if (g->got[0] && gev_conn_send(g->got[0], "ping", 4) == 0)
    g->sent = 1;
}

START_TEST(test_pool_over_server)
{
  reset();
  gev_options bo = {.num_loops = 1};
  th_server *backend = th_start(&th_echo_handler, &bo);
  gev_options fo = {.num_loops = LOOPS};
  th_server *front = th_start(&th_echo_handler, &fo);
  gev_pool_options po = {.size = SIZE, .server = front->s};
  gev_pool *p;

  client_opts(&po, backend->port, 50);
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), 0);
  ck_assert_int_eq(gev_pool_size(p), SIZE);
  wait_connected(p, SIZE);
  ck_assert(th_wait_int(&th_connects, SIZE, 10000)); /* the backend's */
  for (int i = 0; i < LOOPS; i++) {
    gets g = {p, gev_server_worker_loop(front->s, i), {0}, 0};
    th_run_in_loop(g.l, get_task, &g);
    /* Two members a loop, in turn, each of that loop. */
    ck_assert_ptr_nonnull(g.got[0]);
    ck_assert_ptr_nonnull(g.got[1]);
    ck_assert_ptr_ne(g.got[0], g.got[1]);
    for (int k = 2; k < 6; k++)
      ck_assert_ptr_eq(g.got[k], g.got[k % 2]);
    ck_assert_ptr_eq(gev_conn_loop(g.got[0]), g.l);
    ck_assert_int_eq(g.sent, 1);
  }
  ck_assert(th_wait_int((const volatile int *)&echoed, 4 * LOOPS, 10000));
  /* Not from another thread, nor for a loop without members. */
  ck_assert_ptr_null(gev_pool_get(p, gev_server_worker_loop(front->s, 0)));
  gev_pool_free(p);
  ck_assert(th_wait_int((const volatile int *)&closes, SIZE, 10000));
  ck_assert(th_wait_int(&th_closes, SIZE, 10000)); /* the backend saw them */
  th_stop(front);
  th_stop(backend);
}
END_TEST

/* A member whose connection closed is skipped until it is back. */
typedef struct skip {
  gev_pool *p;
  gev_loop *l;
  gev_conn *aborted, *after[4];
} skip;

static void abort_one(void *arg)
{
  skip *s = arg;

  s->aborted = gev_pool_get(s->p, s->l);
  gev_conn_abort(s->aborted); /* closes after the pass */
}

static void get_after(void *arg)
{
  skip *s = arg;

  for (int i = 0; i < 4; i++)
    s->after[i] = gev_pool_get(s->p, s->l);
}

START_TEST(test_pool_skips_unconnected)
{
  reset();
  gev_options bo = {.num_loops = 1};
  th_server *backend = th_start(&th_echo_handler, &bo);
  th_loop_thread lt;
  gev_pool_options po = {.size = 2};
  gev_pool *p;
  skip s = {0};

  th_lt_start(&lt);
  po.loop = lt.l;
  client_opts(&po, backend->port, 5000); /* no redial during the test */
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), 0);
  wait_connected(p, 2);
  s.p = p;
  s.l = lt.l;
  th_run_in_loop(lt.l, abort_one, &s);
  ck_assert_ptr_nonnull(s.aborted);
  wait_connected(p, 1);
  th_run_in_loop(lt.l, get_after, &s);
  for (int i = 0; i < 4; i++) {
    ck_assert_ptr_nonnull(s.after[i]);
    ck_assert_ptr_ne(s.after[i], s.aborted);
  }
  gev_pool_free(p);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  th_stop(backend);
}
END_TEST

/* The backend goes away and comes back on the same port: the count drops
 * to 0 and climbs back, the members redial on their own. */
START_TEST(test_pool_reconnects)
{
  reset();
  gev_options bo = {.num_loops = 1};
  th_server *backend = th_start(&th_echo_handler, &bo);
  gev_options fo = {.num_loops = 2};
  th_server *front = th_start(&th_echo_handler, &fo);
  gev_pool_options po = {.size = 4, .server = front->s};
  char addr[32];
  int port = backend->port;
  gev_pool *p;

  client_opts(&po, port, 20);
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), 0);
  wait_connected(p, 4);
  th_stop(backend);
  wait_connected(p, 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  bo.address = addr;
  backend = th_start(&th_echo_handler, &bo);
  wait_connected(p, 4);
  gev_pool_free(p);
  th_stop(front);
  th_stop(backend);
}
END_TEST

/* Freed from another thread while its members keep failing to connect,
 * and with the loops gone first: nothing leaks (ASan, valgrind) or races
 * (TSan). */
static void *free_main(void *arg)
{
  gev_pool_free(arg);
  return NULL;
}

START_TEST(test_pool_free_any_thread)
{
  reset();
  gev_options fo = {.num_loops = LOOPS};
  th_server *front = th_start(&th_echo_handler, &fo);
  gev_pool_options po = {.size = 5, .server = front->s};
  gev_pool *p, *q;
  pthread_t t;

  client_opts(&po, th_free_port(), 10); /* refused, retried every 10 ms */
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), 0);
  ck_assert_int_eq(gev_pool_new(&q, &member_handler, &po), 0);
  usleep(100000);
  ck_assert_int_eq(gev_pool_connected(p), 0);
  pthread_create(&t, NULL, free_main, p);
  th_join(t, 10);
  th_stop(front); /* q's loops stop under it */
  gev_pool_free(q);
  gev_pool_free(NULL);
}
END_TEST

START_TEST(test_pool_bad_options)
{
  reset();
  gev_options fo = {.address = "127.0.0.1:0", .num_loops = 1};
  gev_pool_options po = {0};
  gev_server *s;
  gev_loop *l;
  gev_pool *p = (gev_pool *)&po;

  ck_assert_int_eq(gev_server_new(&s, &th_echo_handler, &fo), 0);
  ck_assert_int_eq(gev_loop_new(&l), 0);
  client_opts(&po, 1, 10);
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), -EINVAL);
  ck_assert_ptr_null(p);
  po.server = s;
  po.loop = l;
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), -EINVAL);
  po.loop = NULL;
  po.size = -1;
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), -EINVAL);
  po.size = 2;
  po.client.connect.address = "127.0.0.1:notaport";
  ck_assert_int_eq(gev_pool_new(&p, &member_handler, &po), -EINVAL);
  ck_assert_int_eq(gev_pool_connected(NULL), 0);
  gev_loop_free(l);
  gev_server_free(s);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"pool_over_server", test_pool_over_server, 60},
      {"pool_skips_unconnected", test_pool_skips_unconnected, 60},
      {"pool_reconnects", test_pool_reconnects, 60},
      {"pool_free_any_thread", test_pool_free_any_thread, 60},
      {"pool_bad_options", test_pool_bad_options, 30},
  };

  return th_run(th_suite("pool", cases, sizeof(cases) / sizeof(cases[0])));
}
