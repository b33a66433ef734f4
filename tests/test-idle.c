/*
 * test-idle.c - idle timeouts by kind (reader, writer, all), on_idle, the
 * per-connection overrides (gev_conn_set_idle_timeout,
 * gev_conn_set_max_buffer), idle timeouts of outgoing connections, and
 * the custom load balancer (gev_options.pick_loop).
 *
 * Times are short (a few hundred ms) and every wait is bounded; the
 * "still open" checks are windows in which nothing may happen, never
 * speed assertions. Globals are reset per case (CK_FORK=no works).
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* True when nothing but bytes (no EOF, no error) arrives within ms; the
 * bytes are read and counted into *got. */
static bool open_for(int fd, int ms, size_t *got)
{
  uint64_t end = th_now_ms() + (uint64_t)ms;
  char buf[4096];

  for (int i = 0; i < 10000; i++) {
    uint64_t now = th_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (now >= end)
      return true;
    if (poll(&p, 1, (int)(end - now)) == 0)
      return true;
    n = read(fd, buf, sizeof(buf));
    if (n <= 0)
      return false;
    if (got)
      *got += (size_t)n;
  }
  return true;
}

/* Reads (and counts) until EOF or an error within ms: true at EOF. */
static bool closed_within(int fd, int ms, size_t *got)
{
  uint64_t end = th_now_ms() + (uint64_t)ms;
  char buf[4096];

  for (int i = 0; i < 100000; i++) {
    uint64_t now = th_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (now >= end || poll(&p, 1, (int)(end - now)) == 0)
      return false;
    n = read(fd, buf, sizeof(buf));
    if (n <= 0)
      return true; /* EOF, or a reset */
    if (got)
      *got += (size_t)n;
  }
  return false;
}

/* ---- a server that pushes to every client ----------------------------- */

typedef struct pusher {
  gev_conn *c;
  gev_timer_id t;
} pusher;

static int closes;

static void push(void *arg)
{
  pusher *p = arg;

  gev_conn_send(p->c, "tick\n", 5);
}

static void push_connect(gev_conn *c)
{
  pusher *p = calloc(1, sizeof(*p));

  ck_assert_ptr_nonnull(p);
  p->c = c;
  p->t = gev_loop_run_every(gev_conn_loop(c), 50, push, p);
  gev_conn_set_context(c, p);
}

static void push_close(gev_conn *c)
{
  pusher *p = gev_conn_context(c);

  gev_loop_cancel(gev_conn_loop(c), p->t);
  free(p);
  th_inc(&closes);
}

static const gev_handler pushing = {.on_connect = push_connect,
                                    .on_message = th_echo_msg,
                                    .on_close = push_close};

/* The case, shorter: idle 300 ms with a push every 50 ms. The
 * all-idle timeout (today's meaning) counts the pushes and never closes
 * the silent client; the reader-idle one does. */
START_TEST(reader_idle_closes_silent_client_of_pusher)
{
  gev_options all = {.num_loops = 1, .idle_timeout_ms = 300};
  gev_options rd = {.num_loops = 1, .reader_idle_ms = 300};
  th_server *a, *b;
  size_t got = 0;
  uint64_t t0;
  int fa, fb;

  th_st(&closes, 0);
  a = th_start(&pushing, &all);
  b = th_start(&pushing, &rd);
  fa = th_connect(a->port);
  fb = th_connect(b->port);
  ck_assert(fa >= 0 && fb >= 0);
  t0 = th_now_ms();
  ck_assert(closed_within(fb, 5000, &got));
  ck_assert_uint_ge(th_now_ms() - t0, 250); /* not before its timeout */
  ck_assert_uint_gt(got, 0);                /* it was pushed to */
  got = 0;
  ck_assert(open_for(fa, 900, &got)); /* 3x the timeout: still open */
  ck_assert_uint_gt(got, 0);
  close(fa);
  close(fb);
  th_stop(a);
  th_stop(b);
  /* A client that talks keeps a reader-idle connection open: a byte every
   * 50 ms for twice the timeout (which is long enough for a loaded
   * machine's scheduling gaps). */
  rd.reader_idle_ms = 600;
  b = th_start(&pushing, &rd);
  fb = th_connect(b->port);
  for (int i = 0; i < 24; i++) {
    ck_assert(th_write_all(fb, "x", 1));
    ck_assert_msg(open_for(fb, 50, NULL), "closed after %d bytes", i + 1);
  }
  close(fb);
  th_stop(b);
}
END_TEST

/* ---- writer idle and on_idle ------------------------------------------ */

static int idle_calls[3], idle_bad;

static void heartbeat(gev_conn *c, gev_idle_kind kind)
{
  if ((unsigned)kind > GEV_IDLE_ALL) {
    th_inc(&idle_bad);
    return;
  }
  th_inc(&idle_calls[kind]);
  if (kind == GEV_IDLE_WRITER)
    gev_conn_send(c, "H", 1);
}

static void swallow(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  ringbuffer_retrieve_all(in);
}

/* A client that keeps talking to a server that never answers: writer-idle
 * closes it; with on_idle the server sends a heartbeat instead, once per
 * period, and the connection stays. */
START_TEST(writer_idle_and_heartbeat)
{
  static const gev_handler mute = {.on_message = swallow};
  static const gev_handler beating = {.on_message = swallow,
                                      .on_idle = heartbeat};
  gev_options o = {.num_loops = 1, .writer_idle_ms = 200};
  th_server *a, *b;
  size_t got = 0;
  int fa, fb, done = 0;

  memset(idle_calls, 0, sizeof(idle_calls));
  th_st(&idle_bad, 0);
  a = th_start(&mute, &o);
  b = th_start(&beating, &o);
  fa = th_connect(a->port);
  fb = th_connect(b->port);
  ck_assert(fa >= 0 && fb >= 0);
  for (int i = 0; i < 100 && !done; i++) {
    struct pollfd p = {.fd = fa, .events = POLLIN};
    ck_assert(th_write_all(fa, "y", 1));
    ck_assert(th_write_all(fb, "y", 1));
    if (poll(&p, 1, 50) == 1) {
      char ch;
      ck_assert_int_le(read(fa, &ch, 1), 0); /* EOF, no byte */
      done = 1;
    }
  }
  ck_assert_msg(done, "writer-idle never closed the mute server's client");
  ck_assert(open_for(fb, 100, &got)); /* about 600 ms of talking so far */
  ck_assert_uint_ge(got, 1);
  ck_assert(open_for(fb, 700, &got));
  ck_assert_uint_ge(got, 3); /* a beat per 200-250 ms */
  ck_assert_int_ge(th_ld(&idle_calls[GEV_IDLE_WRITER]), 3);
  ck_assert_int_eq(th_ld(&idle_calls[GEV_IDLE_READER]), 0);
  ck_assert_int_eq(th_ld(&idle_calls[GEV_IDLE_ALL]), 0);
  ck_assert_int_eq(th_ld(&idle_bad), 0);
  close(fa);
  close(fb);
  th_stop(a);
  th_stop(b);
}
END_TEST

/* ---- per-connection overrides ----------------------------------------- */

static int nth, special_rc = 1;
static gev_loop *stats_loop;

/* The first connection is special: no all-idle timeout for it. */
static void maybe_special(gev_conn *c)
{
  if (th_ld(&nth) == 0)
    th_st(&special_rc, gev_conn_set_idle_timeout(c, GEV_IDLE_ALL, 0));
  th_inc(&nth);
}

static bool no_conns(void *s)
{
  return gev_server_conn_count(s) == 0;
}

/* In the loop: its own figures, exact (published at once there). */
static void timers_fired_task(void *arg)
{
  gev_stats st = {0};

  gev_loop_stats(stats_loop, &st);
  *(uint64_t *)arg = st.timers_fired;
}

START_TEST(per_connection_idle_override)
{
  static const gev_handler h = {.on_connect = maybe_special,
                                .on_message = th_echo_msg};
  gev_options o = {.num_loops = 1, .idle_timeout_ms = 200};
  th_server *t;
  int f1, f2;

  th_st(&nth, 0);
  th_st(&special_rc, 1);
  t = th_start(&h, &o);
  f1 = th_connect(t->port);
  ck_assert(th_wait_int(&nth, 1, 5000));
  f2 = th_connect(t->port);
  ck_assert(f1 >= 0 && f2 >= 0);
  ck_assert(closed_within(f2, 5000, NULL));
  ck_assert_int_eq(th_ld(&special_rc), 0);
  ck_assert(open_for(f1, 600, NULL));
  ck_assert(th_echo_roundtrip(f1, 1000, 7));
  close(f1);
  close(f2);
  /* Nobody left to watch: the loop's sweep stops (no timer fires). */
  {
    gev_loop *l = gev_server_worker_loop(t->s, 0);
    uint64_t before, after;

    stats_loop = l;
    ck_assert(th_wait_until(no_conns, t->s, 5000));
    th_run_in_loop(l, th_noop, NULL); /* a pass after the last close */
    th_run_in_loop(l, timers_fired_task, &before);
    usleep(300 * 1000); /* the sweep's period is 50 ms */
    th_run_in_loop(l, timers_fired_task, &after);
    ck_assert_uint_eq(before, after);
  }
  th_stop(t);
}
END_TEST

/* ---- callbacks that change other connections' timeouts ---------------- */

static gev_conn *pair_conns[2];
static int pair_n, pair_idles;

static void pair_connect(gev_conn *c)
{
  int i = pair_n++; /* the loop's thread only */

  if (i < 2)
    pair_conns[i] = c;
}

/* The first connection's idle turns the other's timeouts off (taking it
 * off the loop's watch list during the sweep), then closes itself. */
static void pair_idle(gev_conn *c, gev_idle_kind kind)
{
  (void)kind;
  th_inc(&pair_idles);
  for (int i = 0; i < 2; i++)
    if (pair_conns[i] && pair_conns[i] != c)
      gev_conn_set_idle_timeout(pair_conns[i], GEV_IDLE_ALL, 0);
  gev_conn_close(c);
}

static void pair_close(gev_conn *c)
{
  for (int i = 0; i < 2; i++)
    if (pair_conns[i] == c)
      pair_conns[i] = NULL;
}

START_TEST(on_idle_changes_another_connection)
{
  static const gev_handler h = {.on_connect = pair_connect,
                                .on_message = th_echo_msg,
                                .on_close = pair_close,
                                .on_idle = pair_idle};
  gev_options o = {.num_loops = 1, .idle_timeout_ms = 150};
  th_server *t;
  int f1, f2;

  pair_n = 0;
  pair_conns[0] = pair_conns[1] = NULL;
  th_st(&pair_idles, 0);
  t = th_start(&h, &o);
  f1 = th_connect(t->port);
  ck_assert(th_echo_roundtrip(f1, 10, 1)); /* the first on the list */
  f2 = th_connect(t->port);
  ck_assert(th_echo_roundtrip(f2, 10, 2));
  ck_assert(closed_within(f1, 5000, NULL));
  ck_assert_int_eq(th_ld(&pair_idles), 1);
  ck_assert(open_for(f2, 500, NULL));        /* its timeout was turned off */
  ck_assert(th_echo_roundtrip(f2, 1000, 3)); /* and the loop runs */
  close(f1);
  close(f2);
  th_stop(t);
}
END_TEST

/* ---- bad inputs ------------------------------------------------------- */

static gev_conn *held;
static int bad_rc[8];

static void check_bad(gev_conn *c)
{
  bad_rc[0] = gev_conn_set_idle_timeout(NULL, GEV_IDLE_ALL, 10);
  bad_rc[1] = gev_conn_set_idle_timeout(c, (gev_idle_kind)7, 10);
  bad_rc[2] = gev_conn_set_idle_timeout(c, (gev_idle_kind)-1, 10);
  bad_rc[3] = gev_conn_set_idle_timeout(c, GEV_IDLE_READER, -5);
  bad_rc[4] = gev_conn_set_max_buffer(NULL, 10);
  gev_conn_ref(c);
  __atomic_store_n(&held, c, __ATOMIC_SEQ_CST);
}

static void in_loop_after_close(void *arg)
{
  int *rc = arg;

  rc[0] = gev_conn_set_idle_timeout(held, GEV_IDLE_ALL, 10);
  rc[1] = gev_conn_set_max_buffer(held, 10);
}

START_TEST(bad_inputs)
{
  static const gev_handler h = {.on_connect = check_bad,
                                .on_close = th_count_close};
  gev_options o = {.num_loops = 1};
  gev_connect_options co = {.address = "127.0.0.1:9"};
  gev_client_options clo = {.connect = {.address = "127.0.0.1:9"}};
  gev_client *cl;
  gev_server *s;
  th_server *t;
  int fd, after[2];

  held = NULL;
  th_reset_counters();
  t = th_start(&h, &o);
  fd = th_connect(t->port);
  ck_assert_int_ge(fd, 0);
  for (int i = 0; i < 5000 && !__atomic_load_n(&held, __ATOMIC_SEQ_CST); i++)
    usleep(1000);
  ck_assert_ptr_nonnull(held);
  for (int i = 0; i < 5; i++)
    ck_assert_msg(bad_rc[i] == -EINVAL, "case %d: %d", i, bad_rc[i]);
  /* From the test thread: not the owner. */
  ck_assert_int_eq(gev_conn_set_idle_timeout(held, GEV_IDLE_ALL, 10), -EINVAL);
  ck_assert_int_eq(gev_conn_set_max_buffer(held, 10), -EINVAL);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  th_run_in_loop(gev_conn_loop(held), in_loop_after_close, after);
  ck_assert_int_eq(after[0], -ENOTCONN);
  ck_assert_int_eq(after[1], -ENOTCONN);
  gev_conn_unref(held);
  th_stop(t);

  /* Negative options. */
  o = (gev_options){.address = "127.0.0.1:0", .reader_idle_ms = -1};
  ck_assert_int_eq(gev_server_new(&s, &h, &o), -EINVAL);
  o = (gev_options){.address = "127.0.0.1:0", .writer_idle_ms = -1};
  ck_assert_int_eq(gev_server_new(&s, &h, &o), -EINVAL);
  o = (gev_options){.address = "127.0.0.1:0", .idle_timeout_ms = -1};
  ck_assert_int_eq(gev_server_new(&s, &h, &o), -EINVAL);
  {
    th_loop_thread lt;
    th_lt_start(&lt);
    co.reader_idle_ms = -1;
    ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), -EINVAL);
    co.reader_idle_ms = 0;
    co.writer_idle_ms = -1;
    ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), -EINVAL);
    co.writer_idle_ms = 0;
    co.idle_timeout_ms = -1;
    ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), -EINVAL);
    clo.connect.reader_idle_ms = -1;
    ck_assert_int_eq(gev_client_new(&cl, lt.l, &h, &clo), -EINVAL);
    ck_assert_ptr_null(cl);
    th_lt_stop(&lt);
    gev_loop_free(lt.l);
  }
}
END_TEST

/* ---- outgoing connections --------------------------------------------- */

static int out_closed, out_result = 1, out_done;

static void out_res(gev_conn *c, int err, void *arg)
{
  (void)c;
  (void)arg;
  th_st(&out_result, err);
  th_inc(&out_done);
}

static void out_close(gev_conn *c)
{
  (void)c;
  th_inc(&out_closed);
}

/* A silent peer: reader-idle from the connect options closes the
 * outgoing connection. */
START_TEST(outgoing_reader_idle)
{
  static const gev_handler h = {.on_close = out_close};
  th_loop_thread lt;
  char addr[32];
  int port, lfd = th_listen_plain(8, &port), afd;
  gev_connect_options co = {
      .address = addr, .reader_idle_ms = 200, .on_result = out_res};

  th_st(&out_closed, 0);
  th_st(&out_result, 1);
  th_st(&out_done, 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), 0);
  afd = th_accept(lfd);
  ck_assert(th_wait_int(&out_done, 1, 5000));
  ck_assert_int_eq(th_ld(&out_result), 0);
  ck_assert(closed_within(afd, 5000, NULL));
  ck_assert_int_eq(th_ld(&out_closed), 1);
  close(afd);
  /* Without the option it stays. */
  co.reader_idle_ms = 0;
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), 0);
  afd = th_accept(lfd);
  ck_assert(open_for(afd, 600, NULL));
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  close(afd);
  close(lfd);
}
END_TEST

/* ---- per-connection max_buffer ---------------------------------------- */

static void small_cap(gev_conn *c)
{
  gev_conn_set_max_buffer(c, 1024);
}

static void hoard(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)in;
  (void)out; /* consumes nothing: input piles up to the cap */
}

START_TEST(per_connection_max_buffer)
{
  static const gev_handler capped = {.on_connect = small_cap,
                                     .on_message = hoard};
  static const gev_handler wide = {.on_message = hoard};
  gev_options o = {.num_loops = 1};
  th_server *a = th_start(&capped, &o), *b = th_start(&wide, &o);
  char buf[4096] = {0};
  int fa = th_connect(a->port), fb = th_connect(b->port);

  ck_assert(fa >= 0 && fb >= 0);
  ck_assert(th_write_all(fa, buf, sizeof(buf)));
  ck_assert(th_write_all(fb, buf, sizeof(buf)));
  ck_assert(closed_within(fa, 5000, NULL)); /* past its 1 KiB */
  ck_assert(open_for(fb, 300, NULL));       /* far below 64 MiB */
  close(fa);
  close(fb);
  th_stop(a);
  th_stop(b);
}
END_TEST

/* ---- the custom load balancer ----------------------------------------- */

static int picks, pick_loops, pick_seen_max, pick_v4_loopback;
static int pick_result;

static int pick(const struct sockaddr *peer, socklen_t len, const int *conns,
                int n, void *arg)
{
  const struct sockaddr_in *sin = (const struct sockaddr_in *)peer;
  int total = 0;

  ck_assert_ptr_eq(arg, &picks);
  if (peer->sa_family == AF_INET && len >= sizeof(*sin) &&
      sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
    th_inc(&pick_v4_loopback);
  for (int i = 0; i < n; i++)
    total += conns[i];
  if (total > th_ld(&pick_seen_max))
    th_st(&pick_seen_max, total);
  th_st(&pick_loops, n);
  th_inc(&picks);
  return th_ld(&pick_result);
}

static int on_loop[4];
static gev_server *lb_server;

static void where(gev_conn *c)
{
  for (int i = 0; i < 3; i++)
    if (gev_conn_loop(c) == gev_server_worker_loop(lb_server, i))
      th_inc(&on_loop[i]);
}

static void lb_run(int result, int nconn)
{
  static const gev_handler h = {.on_connect = where, .on_message = th_echo_msg};
  gev_options o = {.num_loops = 3, .pick_loop = pick, .pick_loop_arg = &picks};
  th_server *t;
  int fds[8];

  th_st(&picks, 0);
  th_st(&pick_seen_max, 0);
  th_st(&pick_v4_loopback, 0);
  th_st(&pick_result, result);
  memset(on_loop, 0, sizeof(on_loop));
  t = th_start(&h, &o);
  __atomic_store_n(&lb_server, t->s, __ATOMIC_SEQ_CST);
  for (int i = 0; i < nconn; i++) {
    fds[i] = th_connect(t->port);
    ck_assert(th_echo_roundtrip(fds[i], 10, (uint32_t)i)); /* started */
  }
  ck_assert_int_eq(th_ld(&picks), nconn);
  ck_assert_int_eq(th_ld(&pick_loops), 3);
  ck_assert_int_eq(th_ld(&pick_v4_loopback), nconn);
  ck_assert_int_eq(th_ld(&pick_seen_max), nconn - 1); /* counts it saw */
  for (int i = 0; i < nconn; i++)
    close(fds[i]);
  th_stop(t);
}

START_TEST(custom_load_balancer)
{
  lb_run(2, 6); /* all on loop 2 */
  ck_assert_int_eq(th_ld(&on_loop[2]), 6);
  lb_run(3, 6); /* out of range: round-robin */
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(th_ld(&on_loop[i]), 2);
  lb_run(-1, 3);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(th_ld(&on_loop[i]), 1);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"reader_idle_closes_silent_client_of_pusher",
       reader_idle_closes_silent_client_of_pusher, 30},
      {"writer_idle_and_heartbeat", writer_idle_and_heartbeat, 30},
      {"per_connection_idle_override", per_connection_idle_override, 30},
      {"on_idle_changes_another_connection", on_idle_changes_another_connection,
       30},
      {"bad_inputs", bad_inputs, 30},
      {"outgoing_reader_idle", outgoing_reader_idle, 30},
      {"per_connection_max_buffer", per_connection_max_buffer, 30},
      {"custom_load_balancer", custom_load_balancer, 30},
  };
  return th_run(th_suite("idle", cases, sizeof(cases) / sizeof(cases[0])));
}
