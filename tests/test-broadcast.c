/* test-broadcast.c - gev_server_foreach_conn and gev_server_broadcast
 * across several worker loops, from other threads and from handlers. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

enum { LOOPS = 3, CLIENTS = 9 };

/* Clients say "hi NN\n"; the handler records its connection under NN.
 * "chat ...\n" from a client is broadcast to all the others. */
static _Atomic(gev_conn *) conns[CLIENTS];
static atomic_int bad;
static _Atomic(gev_server *) srv; /* set before any client speaks */
static atomic_int churn_stop;

/* Check runs every case in one process without fork (valgrind): each
 * starts from zero. */
static void reset(void)
{
  for (int i = 0; i < CLIENTS; i++)
    atomic_store(&conns[i], NULL);
  atomic_store(&bad, 0);
  atomic_store(&srv, NULL);
  atomic_store(&churn_stop, 0);
}

static void b_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  char line[64];
  ssize_t at;

  (void)out;
  while ((at = ringbuffer_find(in, "\n", 1)) >= 0) {
    size_t n = (size_t)at + 1 < sizeof(line) ? (size_t)at + 1 : sizeof(line);
    int id;
    ringbuffer_read(in, line, n);
    line[n - 1] = '\0';
    if (sscanf(line, "hi %d", &id) == 1 && id >= 0 && id < CLIENTS) {
      gev_conn_ref(c);
      atomic_store(&conns[id], c);
    } else if (strncmp(line, "chat ", 5) == 0) {
      line[n - 1] = '\n';
      if (gev_server_broadcast(atomic_load(&srv), line, n, c) != 0)
        atomic_fetch_add(&bad, 1);
    }
  }
}

static const gev_handler b_handler = {NULL, b_message, NULL, NULL, NULL};

typedef struct fixture {
  th_server *t;
  int fd[CLIENTS];
} fixture;

static void setup(fixture *f)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = LOOPS};
  char hi[16];

  f->t = th_start(&b_handler, &opt);
  atomic_store(&srv, f->t->s); /* before any client speaks */
  for (int i = 0; i < CLIENTS; i++) {
    f->fd[i] = th_connect(f->t->port);
    ck_assert_int_ge(f->fd[i], 0);
    snprintf(hi, sizeof(hi), "hi %d\n", i);
    ck_assert(th_write_all(f->fd[i], hi, strlen(hi)));
  }
  for (int i = 0; i < CLIENTS; i++)
    for (int k = 0; k < 10000 && !atomic_load(&conns[i]); k++)
      usleep(1000);
  for (int i = 0; i < CLIENTS; i++)
    ck_assert_ptr_nonnull(atomic_load(&conns[i]));
}

static void teardown(fixture *f)
{
  for (int i = 0; i < CLIENTS; i++)
    close(f->fd[i]);
  th_stop(f->t);
  for (int i = 0; i < CLIENTS; i++)
    gev_conn_unref(atomic_load(&conns[i]));
}

/* From the test thread: everyone but the skipped one gets it, once. */
START_TEST(test_broadcast_skip)
{
  reset();
  fixture f;
  char buf[8];

  setup(&f);
  ck_assert_int_eq(
      gev_server_broadcast(f.t->s, "one\n", 4, atomic_load(&conns[0])), 0);
  ck_assert_int_eq(gev_server_broadcast(f.t->s, "two\n", 4, NULL), 0);
  for (int i = 0; i < CLIENTS; i++) {
    if (i > 0) {
      ck_assert(th_read_exact(f.fd[i], buf, 4));
      ck_assert(memcmp(buf, "one\n", 4) == 0);
    }
    ck_assert(th_read_exact(f.fd[i], buf, 4));
    ck_assert(memcmp(buf, "two\n", 4) == 0);
  }
  ck_assert_int_eq(gev_server_broadcast(f.t->s, NULL, 1, NULL), -EINVAL);
  ck_assert_int_eq(gev_server_broadcast(NULL, "x", 1, NULL), -EINVAL);
  ck_assert_int_eq(gev_server_broadcast(f.t->s, "x", 0, NULL), 0);
  teardown(&f);
}
END_TEST

/* From a handler (a chat server): the sender is skipped. */
START_TEST(test_broadcast_from_handler)
{
  reset();
  fixture f;
  char buf[16];

  setup(&f);
  ck_assert(th_write_all(f.fd[4], "chat hello\n", 11));
  for (int i = 0; i < CLIENTS; i++) {
    if (i == 4)
      continue;
    ck_assert(th_read_exact(f.fd[i], buf, 11));
    ck_assert(memcmp(buf, "chat hello\n", 11) == 0);
  }
  ck_assert_int_eq(gev_server_broadcast(f.t->s, "end\n", 4, NULL), 0);
  ck_assert(th_read_exact(f.fd[4], buf, 4)); /* nothing came before it */
  ck_assert(memcmp(buf, "end\n", 4) == 0);
  ck_assert_int_eq(atomic_load(&bad), 0);
  teardown(&f);
}
END_TEST

/* ---- foreach ---------------------------------------------------------- */

typedef struct tally {
  atomic_int visits, wrong_thread, dones;
  gev_loop *caller_loop;
  atomic_int own_loop_visits;
} tally;

static void count_visit(gev_conn *c, void *arg)
{
  tally *t = arg;

  if (!gev_loop_in_thread(gev_conn_loop(c)))
    atomic_fetch_add(&t->wrong_thread, 1);
  if (gev_conn_loop(c) == t->caller_loop)
    atomic_fetch_add(&t->own_loop_visits, 1);
  atomic_fetch_add(&t->visits, 1);
}

static void count_done(void *arg)
{
  tally *t = arg;

  atomic_fetch_add(&t->dones, 1);
}

static bool done_once(void *arg)
{
  return atomic_load(&((tally *)arg)->dones) == 1;
}

START_TEST(test_foreach)
{
  reset();
  fixture f;
  tally t = {0};

  setup(&f);
  ck_assert_int_eq(gev_server_foreach_conn(f.t->s, count_visit, &t, count_done),
                   0);
  ck_assert(th_wait_until(done_once, &t, 10000));
  usleep(50000);
  ck_assert_int_eq(atomic_load(&t.dones), 1);
  ck_assert_int_eq(atomic_load(&t.visits), CLIENTS);
  ck_assert_int_eq(atomic_load(&t.wrong_thread), 0);
  ck_assert_int_eq(gev_server_foreach_conn(f.t->s, NULL, &t, NULL), -EINVAL);
  teardown(&f);
}
END_TEST

/* Called from a worker loop: that loop's visits are done on return. */
typedef struct from_loop {
  gev_server *s;
  tally *t;
  int own_before_return;
  int r;
} from_loop;

static void foreach_task(void *arg)
{
  from_loop *x = arg;

  x->r = gev_server_foreach_conn(x->s, count_visit, x->t, count_done);
  x->own_before_return = atomic_load(&x->t->own_loop_visits);
}

START_TEST(test_foreach_from_loop)
{
  reset();
  fixture f;
  tally t = {0};
  from_loop x = {0};
  gev_loop *l;
  int own = 0;

  setup(&f);
  l = gev_conn_loop(atomic_load(&conns[0]));
  t.caller_loop = l;
  x.s = f.t->s;
  x.t = &t;
  th_run_in_loop(l, foreach_task, &x);
  ck_assert_int_eq(x.r, 0);
  for (int i = 0; i < CLIENTS; i++)
    own += gev_conn_loop(atomic_load(&conns[i])) == l;
  ck_assert_int_ge(own, 1);
  ck_assert_int_eq(x.own_before_return, own);
  ck_assert(th_wait_until(done_once, &t, 10000));
  ck_assert_int_eq(atomic_load(&t.visits), CLIENTS);
  teardown(&f);
}
END_TEST

/* A server that never runs: its loops drop the visit unrun when freed,
 * and done still runs once. */
START_TEST(test_foreach_dropped)
{
  reset();
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_server *s;
  tally t = {0};

  ck_assert_int_eq(gev_server_new(&s, &b_handler, &opt), 0);
  ck_assert_int_eq(gev_server_foreach_conn(s, count_visit, &t, count_done), 0);
  ck_assert_int_eq(atomic_load(&t.dones), 0);
  gev_server_free(s);
  ck_assert_int_eq(atomic_load(&t.dones), 1);
  ck_assert_int_eq(atomic_load(&t.visits), 0);
}
END_TEST

/* ---- many broadcasters at once (TSan) ---------------------------------- */

enum { SENDERS = 4, MSG = 12 };

/* Broadcasts per sender: fewer under valgrind (its test setup sets the
 * timeout multiplier), where each costs fifty times as much. */
static int per_sender(void)
{
  return getenv("CK_TIMEOUT_MULTIPLIER") ? 60 : 300;
}

typedef struct sender {
  gev_server *s;
  int id;
} sender;

static void *send_main(void *arg)
{
  sender *x = arg;
  char m[MSG + 1];

  for (int i = 0; i < per_sender(); i++) {
    snprintf(m, sizeof(m), "s%d %07d\n", x->id, i);
    if (gev_server_broadcast(x->s, m, MSG, NULL) != 0)
      atomic_fetch_add(&bad, 1);
  }
  return NULL;
}

/* Connections that come and go while the broadcasts run. */
static void *churn_main(void *arg)
{
  int port = *(int *)arg;

  for (int i = 0; i < 200 && !atomic_load(&churn_stop); i++) {
    int fd = th_connect(port);
    if (fd >= 0)
      close(fd);
  }
  return NULL;
}

START_TEST(test_broadcast_storm)
{
  reset();
  fixture f;
  sender x[SENDERS];
  pthread_t th[SENDERS], churn;

  setup(&f);
  pthread_create(&churn, NULL, churn_main, &f.t->port);
  for (int i = 0; i < SENDERS; i++) {
    x[i] = (sender){f.t->s, i};
    pthread_create(&th[i], NULL, send_main, &x[i]);
  }
  /* Every client gets every message, each sender's in order. */
  for (int c = 0; c < CLIENTS; c++) {
    int next[SENDERS] = {0};
    for (int k = 0; k < SENDERS * per_sender(); k++) {
      char m[MSG + 1] = {0};
      int id, seq;
      ck_assert(th_read_exact(f.fd[c], m, MSG));
      ck_assert_int_eq(sscanf(m, "s%d %d", &id, &seq), 2);
      ck_assert(id >= 0 && id < SENDERS);
      ck_assert_int_eq(seq, next[id]);
      next[id]++;
    }
  }
  for (int i = 0; i < SENDERS; i++)
    th_join(th[i], 60);
  atomic_store(&churn_stop, 1);
  th_join(churn, 60);
  ck_assert_int_eq(atomic_load(&bad), 0);
  teardown(&f);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"broadcast_skip", test_broadcast_skip, 30},
      {"broadcast_from_handler", test_broadcast_from_handler, 30},
      {"foreach", test_foreach, 30},
      {"foreach_from_loop", test_foreach_from_loop, 30},
      {"foreach_dropped", test_foreach_dropped, 30},
      {"broadcast_storm", test_broadcast_storm, 120},
  };

  return th_run(th_suite("broadcast", cases, sizeof(cases) / sizeof(cases[0])));
}
