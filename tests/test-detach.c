/*
 * test-detach.c - gev_conn_detach and gev_loop_adopt: a connection's fd
 * taken back mid-stream, with bytes buffered in both directions and more
 * in flight in the kernel, adopted on another loop, and every byte of the
 * echo verified; on_close not called for the detached one, references
 * kept valid; and the bad inputs of both calls.
 *
 * Only loopback and socketpairs. Every wait is bounded.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB ((size_t)1 << 20)
#define TOTAL (4 * MIB)
#define DETACH_AFTER (256 * KIB)

/* ---- the round trip --------------------------------------------------- */

typedef struct trip {
  th_loop_thread b;       /* the loop the connection moves to */
  gev_conn *a_conn;       /* referenced: checked after the detach */
  size_t consumed;        /* echoed on A before the detach */
  size_t in_len, out_len; /* handed back */
  int detached, adopt_rc, a_closes, b_connects, b_result, b_closes;
  int send_after, fd_after;
  bool connected_after;
} trip;

static trip T;

static void b_connect(gev_conn *c)
{
  if (gev_conn_context(c) == &T)
    th_inc(&T.b_connects);
}

static void b_result(gev_conn *c, int err, void *arg)
{
  (void)c;
  (void)arg;
  th_st(&T.b_result, err == 0 ? 1 : err);
}

static void b_close(gev_conn *c)
{
  (void)c;
  th_inc(&T.b_closes);
}

static const gev_handler b_handler = {
    .on_connect = b_connect, .on_message = th_echo_msg, .on_close = b_close};

/* In A's loop: the fd and the buffered bytes move to loop B. */
static void moved(gev_conn *c, const gev_detached *d, void *arg)
{
  gev_adopt_options o = {.fd = d->fd,
                         .in = d->in,
                         .in_len = d->in_len,
                         .out = d->out,
                         .out_len = d->out_len,
                         .context = &T,
                         .on_result = b_result};

  ck_assert_ptr_eq(arg, &T);
  T.in_len = d->in_len;
  T.out_len = d->out_len;
  T.connected_after = gev_conn_connected(c);
  T.fd_after = gev_conn_fd(c);
  T.send_after = gev_conn_send(c, "z", 1);
  th_st(&T.adopt_rc, gev_loop_adopt(T.b.l, &b_handler, &o));
  th_inc(&T.detached);
}

/* Echoes, and past DETACH_AFTER echoes half of what it holds and
 * detaches: the other half stays unconsumed, and the output the client
 * has not read yet is queued. */
static void a_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  if (T.detached || T.a_conn) { /* a detach under way: nothing more */
    return;
  }
  if (T.consumed < DETACH_AFTER) {
    size_t before = ringbuffer_len(in);
    th_echo_move(in, out);
    T.consumed += before - ringbuffer_len(in);
    return;
  }
  {
    size_t half = ringbuffer_len(in) / 2, room;
    struct iovec seg[2];
    size_t n = ringbuffer_peek(in, half, seg);

    room = ringbuffer_cap(out); /* unlimited enough for a half */
    (void)room;
    for (int i = 0; i < 2 && n; i++)
      ck_assert_int_eq(ringbuffer_write(out, seg[i].iov_base, seg[i].iov_len),
                       0);
    ringbuffer_retrieve(in, n);
    T.consumed += n;
  }
  gev_conn_ref(c);
  T.a_conn = c;
  ck_assert_int_eq(gev_conn_detach(c, moved, &T), 0);
  ck_assert_int_eq(gev_conn_detach(c, moved, &T), -EALREADY);
  /* The fd is promised to `moved`: an abort may not take it. */
  ck_assert_int_eq(gev_conn_abort(c), -ENOTCONN);
}

static void a_connect(gev_conn *c)
{
  int small = 4096;

  /* A small send buffer: the output piles up in the library, where the
   * detach finds it. */
  setsockopt(gev_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
}

static void a_close(gev_conn *c)
{
  (void)c;
  th_inc(&T.a_closes);
}

static const gev_handler a_handler = {
    .on_connect = a_connect, .on_message = a_message, .on_close = a_close};

typedef struct writer {
  int fd;
  bool ok;
} writer;

static void *write_all_main(void *arg)
{
  writer *w = arg;
  unsigned char *p = malloc(TOTAL);

  th_fill(p, TOTAL, 42);
  w->ok = th_write_all(w->fd, p, TOTAL);
  free(p);
  return NULL;
}

START_TEST(round_trip_loses_no_byte)
{
  gev_options o = {.num_loops = 1, .max_buffer = 2 * MIB};
  unsigned char *want = malloc(TOTAL), *got = malloc(TOTAL);
  th_server *a;
  writer w;
  pthread_t wt;
  int fd, small = 4096;

  memset(&T, 0, sizeof(T));
  th_lt_start(&T.b);
  a = th_start(&a_handler, &o);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* A small receive window: the echo waits in A's output. */
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  {
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)a->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 10};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  w.fd = fd;
  ck_assert_int_eq(pthread_create(&wt, NULL, write_all_main, &w), 0);
  /* Not reading until the detach happened: A's output fills. */
  ck_assert(th_wait_int(&T.detached, 1, 15000));
  ck_assert(th_read_exact(fd, got, TOTAL));
  th_join(wt, 20);
  ck_assert(w.ok);
  th_fill(want, TOTAL, 42);
  for (size_t i = 0; i < TOTAL; i++)
    if (got[i] != want[i])
      ck_abort_msg("byte %zu differs (%zu consumed on A, %zu in, %zu out "
                   "handed over)",
                   i, T.consumed, T.in_len, T.out_len);
  printf("consumed %zu in %zu out %zu\n", T.consumed, T.in_len, T.out_len);
  ck_assert_int_eq(th_ld(&T.adopt_rc), 0);
  ck_assert_int_eq(th_ld(&T.b_result), 1);
  ck_assert_int_eq(th_ld(&T.b_connects), 1);
  /* Bytes were buffered both ways when it moved. */
  ck_assert_uint_gt(T.in_len, 0);
  ck_assert_uint_gt(T.out_len, 0);
  ck_assert(!T.connected_after);
  ck_assert_int_eq(T.fd_after, -1);
  ck_assert_int_eq(T.send_after, -ENOTCONN);
  ck_assert_int_eq(th_ld(&T.a_closes), 0); /* no on_close for it */
  ck_assert_int_eq(gev_server_conn_count(a->s), 0);
  ck_assert_int_eq(gev_conn_send(T.a_conn, "x", 1), -ENOTCONN);
  gev_conn_unref(T.a_conn);
  close(fd);
  ck_assert(th_wait_int(&T.b_closes, 1, 5000));
  th_lt_stop(&T.b);
  gev_loop_free(T.b.l);
  th_stop(a);
  ck_assert_int_eq(th_ld(&T.a_closes), 0);
  free(want);
  free(got);
}
END_TEST

/* ---- adopt: bytes first, socketpair ----------------------------------- */

static int sp_got;

static void show_first(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  /* The adopted input comes before what the peer sends. */
  char buf[16] = {0};
  size_t n = ringbuffer_read(in, buf, sizeof(buf) - 1);
  if (n >= 3 && memcmp(buf, "pre", 3) == 0)
    th_st(&sp_got, 1);
  else if (th_ld(&sp_got) == 0)
    th_st(&sp_got, -1);
}

static void send_in_connect(gev_conn *c)
{
  gev_conn_send(c, "late", 4); /* after the adopted output */
}

START_TEST(adopt_socketpair_order)
{
  static const gev_handler h = {.on_connect = send_in_connect,
                                .on_message = show_first};
  th_loop_thread lt;
  int sv[2];
  char buf[16] = {0};
  gev_adopt_options o = {
      .in = "pre", .in_len = 3, .out = "early-", .out_len = 6};

  th_st(&sp_got, 0);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  th_lt_start(&lt);
  o.fd = sv[0];
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), 0);
  ck_assert(th_read_exact(sv[1], buf, 10));
  ck_assert_str_eq(buf, "early-late");
  ck_assert(th_wait_int(&sp_got, 1, 5000));
  ck_assert_int_eq(th_ld(&sp_got), 1);
  ck_assert(th_write_all(sv[1], "post", 4));
  th_lt_stop(&lt); /* closes the adopted fd */
  ck_assert(th_wait_eof(sv[1], 5000));
  gev_loop_free(lt.l);
  close(sv[1]);
}
END_TEST

/* ---- a send from another thread on its way ---------------------------- */

typedef struct flight {
  gev_conn *c;
  int entered, sent, detach_rc, handed;
  char out[32];
  size_t out_len;
} flight;

static flight F;

static void flight_connect(gev_conn *c)
{
  gev_conn_ref(c);
  __atomic_store_n(&F.c, c, __ATOMIC_SEQ_CST);
}

static void flight_moved(gev_conn *c, const gev_detached *d, void *arg)
{
  (void)c;
  (void)arg;
  F.out_len = d->out_len < sizeof(F.out) ? d->out_len : sizeof(F.out);
  if (d->out)
    memcpy(F.out, d->out, F.out_len);
  close(d->fd);
  th_inc(&F.handed);
}

/* In c's loop: the detach is asked for while a send from the test thread
 * is already accepted but still queued behind this task. */
static void detach_while_sending(void *arg)
{
  (void)arg;
  th_st(&F.entered, 1);
  for (int i = 0; i < 10000 && !th_ld(&F.sent); i++)
    usleep(1000);
  th_st(&F.detach_rc, gev_conn_detach(F.c, flight_moved, NULL));
}

START_TEST(detach_waits_for_sends_in_flight)
{
  static const gev_handler h = {.on_connect = flight_connect};
  gev_options o = {.num_loops = 1};
  th_server *t;
  int fd;

  memset(&F, 0, sizeof(F));
  F.detach_rc = 1;
  t = th_start(&h, &o);
  fd = th_connect(t->port);
  for (int i = 0; i < 5000 && !__atomic_load_n(&F.c, __ATOMIC_SEQ_CST); i++)
    usleep(1000);
  ck_assert_ptr_nonnull(F.c);
  ck_assert_int_eq(
      gev_loop_post(gev_conn_loop(F.c), detach_while_sending, NULL), 0);
  ck_assert(th_wait_int(&F.entered, 1, 5000));
  ck_assert_int_eq(gev_conn_send(F.c, "in-flight", 9), 0);
  th_st(&F.sent, 1);
  ck_assert(th_wait_int(&F.handed, 1, 5000));
  ck_assert_int_eq(th_ld(&F.detach_rc), 0);
  ck_assert_uint_eq(F.out_len, 9);
  ck_assert(memcmp(F.out, "in-flight", 9) == 0);
  ck_assert_int_eq(gev_conn_send(F.c, "late", 4), -ENOTCONN);
  gev_conn_unref(F.c);
  close(fd);
  th_stop(t);
}
END_TEST

/* ---- bad inputs ------------------------------------------------------- */

static int det_rc[6];
static gev_conn *det_held;

static void never(gev_conn *c, const gev_detached *d, void *arg)
{
  (void)c;
  (void)d;
  (void)arg;
  ck_abort_msg("detach callback ran");
}

static void det_bad_connect(gev_conn *c)
{
  det_rc[0] = gev_conn_detach(NULL, never, NULL);
  det_rc[1] = gev_conn_detach(c, NULL, NULL);
  gev_conn_close(c);
  det_rc[2] = gev_conn_detach(c, never, NULL); /* closing */
  gev_conn_ref(c);
  __atomic_store_n(&det_held, c, __ATOMIC_SEQ_CST);
}

static void det_shut_connect(gev_conn *c)
{
  gev_conn_shutdown_write(c);
  det_rc[3] = gev_conn_detach(c, never, NULL);
  gev_conn_close(c);
}

START_TEST(bad_inputs)
{
  static const gev_handler h = {.on_connect = det_bad_connect};
  static const gev_handler hs = {.on_connect = det_shut_connect};
  gev_options so = {.num_loops = 1};
  th_loop_thread lt;
  th_server *t;
  gev_adopt_options o = {0};
  int fd, lfd, port, sv[2], udp, dn, un;

  for (int i = 0; i < 6; i++)
    det_rc[i] = 1;
  det_held = NULL;
  t = th_start(&h, &so);
  fd = th_connect(t->port);
  ck_assert(th_wait_eof(fd, 5000));
  for (int i = 0; i < 5000 && !__atomic_load_n(&det_held, __ATOMIC_SEQ_CST);
       i++)
    usleep(1000);
  ck_assert_ptr_nonnull(det_held);
  ck_assert_int_eq(det_rc[0], -EINVAL);
  ck_assert_int_eq(det_rc[1], -EINVAL);
  ck_assert_int_eq(det_rc[2], -ENOTCONN);
  /* Another thread. */
  ck_assert_int_eq(gev_conn_detach(det_held, never, NULL), -EINVAL);
  gev_conn_unref(det_held);
  close(fd);
  th_stop(t);
  t = th_start(&hs, &so);
  fd = th_connect(t->port);
  ck_assert(th_wait_eof(fd, 5000));
  close(fd);
  th_stop(t);
  ck_assert_int_eq(det_rc[3], -ENOTCONN);

  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_adopt(NULL, &h, &o), -EINVAL);
  ck_assert_int_eq(gev_loop_adopt(lt.l, NULL, &o), -EINVAL);
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, NULL), -EINVAL);
  o.fd = -1;
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EBADF);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  close(sv[1]);
  o.fd = sv[1]; /* closed */
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EBADF);
  o.fd = sv[0];
  o.in_len = 3; /* NULL bytes with a length */
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EINVAL);
  o.in_len = 0;
  o.out_len = 1;
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EINVAL);
  o.out_len = 0;
  o.reader_idle_ms = -1;
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EINVAL);
  o.reader_idle_ms = 0;
  close(sv[0]);
  dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
  o.fd = dn;
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -ENOTSOCK);
  udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  o.fd = udp;
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -EINVAL);
  lfd = th_listen_plain(4, &port);
  o.fd = lfd; /* listening, not connected */
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -ENOTCONN);
  un = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  o.fd = un; /* never connected */
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -ENOTCONN);
  /* Refused calls left the fds to us: they are still open. */
  ck_assert_int_ge(fcntl(dn, F_GETFD), 0);
  ck_assert_int_ge(fcntl(lfd, F_GETFD), 0);
  th_lt_stop(&lt);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  o.fd = sv[0];
  ck_assert_int_eq(gev_loop_adopt(lt.l, &h, &o), -ESHUTDOWN);
  ck_assert_int_ge(fcntl(sv[0], F_GETFD), 0);
  gev_loop_free(lt.l);
  close(sv[0]);
  close(sv[1]);
  close(dn);
  close(udp);
  close(lfd);
  close(un);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"round_trip_loses_no_byte", round_trip_loses_no_byte, 60},
      {"adopt_socketpair_order", adopt_socketpair_order, 30},
      {"detach_waits_for_sends_in_flight", detach_waits_for_sends_in_flight,
       30},
      {"bad_inputs", bad_inputs, 30},
  };
  return th_run(th_suite("detach", cases, sizeof(cases) / sizeof(cases[0])));
}
