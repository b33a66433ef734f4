/* test-udp.c - datagram sockets (udp.h) against plain blocking sockets on
 * loopback: sizes and truncation, a paced load of 100,000 verified echoes,
 * sends from many threads, closes under load, the bounded send queue,
 * ICMP errors, IPv6, unix datagrams, multicast, broadcast, IP_PKTINFO and
 * the server mode. */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gev/gev.h>
#include <gev/udp.h>

/* ---- helpers ----------------------------------------------------------- */

static atomic_int n_dgrams, n_truncated, n_errors, n_closes, last_error;
static atomic_size_t last_len;
static char last_local[64];

static void echo_dgram(gev_udp *u, const gev_udp_datagram *d)
{
  atomic_fetch_add(&n_dgrams, 1);
  atomic_store(&last_len, d->len);
  if (d->truncated)
    atomic_fetch_add(&n_truncated, 1);
  if (d->local && d->local->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)d->local;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
    snprintf(last_local, sizeof(last_local), "%s:%d", ip, ntohs(a->sin_port));
  }
  if (d->peer_len && !d->truncated)
    gev_udp_send_to(u, d->peer, d->peer_len, d->data, d->len);
}

static void count_error(gev_udp *u, int err)
{
  (void)u;
  atomic_store(&last_error, err);
  atomic_fetch_add(&n_errors, 1);
}

static void count_close(gev_udp *u)
{
  (void)u;
  atomic_fetch_add(&n_closes, 1);
}

static const gev_udp_handler echo_h = {echo_dgram, count_error, count_close};

static void count_dgram(gev_udp *u, const gev_udp_datagram *d)
{
  (void)u;
  (void)d;
  atomic_fetch_add(&n_dgrams, 1);
}

static const gev_udp_handler count_h = {count_dgram, count_error, count_close};

/* A blocking datagram socket with 5 s timeouts, bound to `bind_to` (an
 * IPv4/IPv6 wildcard of port 0 when NULL). */
static int cli(int family, const struct sockaddr *bind_to, socklen_t len)
{
  struct timeval tv = {5, 0};
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (bind_to)
    ck_assert_int_eq(bind(fd, bind_to, len), 0);
  return fd;
}

static struct sockaddr_in v4(const char *ip, int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static gev_udp *open_udp(gev_loop *l, const gev_udp_handler *h,
                         const char *addr)
{
  gev_udp_options o = {.address = addr};
  gev_udp *u;

  ck_assert_int_eq(gev_udp_new(&u, l, h, &o), 0);
  return u;
}

static void reset(void)
{
  atomic_store(&n_dgrams, 0);
  atomic_store(&n_truncated, 0);
  atomic_store(&n_errors, 0);
  atomic_store(&n_closes, 0);
  atomic_store(&last_error, 0);
}

/* A UDP port on 127.0.0.1 where nothing is bound. */
static int free_udp_port(void)
{
  struct sockaddr_in a = v4("127.0.0.1", 0);
  socklen_t len = sizeof(a);
  int fd = cli(AF_INET, (struct sockaddr *)&a, sizeof(a));

  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

static void echo_sizes(int fd, const struct sockaddr *to, socklen_t len)
{
  static const size_t sizes[] = {0, 1, 1472, 8192, 65507};
  static unsigned char out[65536], in[65536];

  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    size_t n = sizes[i];
    th_fill(out, n, (uint32_t)i + 7);
    ck_assert_int_eq(sendto(fd, out, n, 0, to, len), (ssize_t)n);
    ssize_t r = recv(fd, in, sizeof(in), 0);
    ck_assert_msg(r == (ssize_t)n, "size %zu came back as %zd", n, r);
    ck_assert(memcmp(in, out, n) == 0);
  }
}

/* ---- cases -------------------------------------------------------------- */

START_TEST(sizes_v4)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp *u;
  int fd;

  th_lt_start(&lt);
  u = open_udp(lt.l, &echo_h, "127.0.0.1:0");
  struct sockaddr_in to = v4("127.0.0.1", gev_udp_port(u));
  ck_assert_int_gt(gev_udp_port(u), 0);
  fd = cli(AF_INET, NULL, 0);
  echo_sizes(fd, (struct sockaddr *)&to, sizeof(to));
  ck_assert_int_eq(atomic_load(&n_truncated), 0);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

START_TEST(sizes_v6)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  struct sockaddr_in6 to = {.sin6_family = AF_INET6};
  gev_udp *u;
  int fd;

  th_lt_start(&lt);
  u = open_udp(lt.l, &echo_h, "[::1]:0");
  to.sin6_port = htons((uint16_t)gev_udp_port(u));
  to.sin6_addr = in6addr_loopback;
  fd = cli(AF_INET6, NULL, 0);
  echo_sizes(fd, (struct sockaddr *)&to, sizeof(to));
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

static void unix_addr(struct sockaddr_un *a, const char *path)
{
  *a = (struct sockaddr_un){.sun_family = AF_UNIX};
  snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
}

/* Unix datagrams: echoed up to 65,507 bytes; a 70,000-byte one arrives
 * cut to GEV_UDP_MAX_DATAGRAM with `truncated` set; the socket file is
 * removed at close. */
START_TEST(unix_dgram)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  char spath[64], cpath[64], addr[80];
  struct sockaddr_un sa, ca;
  th_loop_thread lt;
  static unsigned char big[70000];
  int fd, sz = 1 << 20;
  gev_udp *u;

  snprintf(spath, sizeof(spath), "/tmp/gev-udp-s-%d", (int)getpid());
  snprintf(cpath, sizeof(cpath), "/tmp/gev-udp-c-%d", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", spath);
  unlink(cpath);
  th_lt_start(&lt);
  u = open_udp(lt.l, &echo_h, addr);
  ck_assert_int_eq(gev_udp_port(u), 0);
  unix_addr(&sa, spath);
  unix_addr(&ca, cpath);
  fd = cli(AF_UNIX, (struct sockaddr *)&ca, sizeof(ca));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  echo_sizes(fd, (struct sockaddr *)&sa, sizeof(sa));
  ck_assert_int_eq(
      sendto(fd, big, sizeof(big), 0, (struct sockaddr *)&sa, sizeof(sa)),
      (ssize_t)sizeof(big));
  ck_assert(th_wait_int((const volatile int *)&n_truncated, 1, 5000));
  ck_assert_uint_eq(atomic_load(&last_len), GEV_UDP_MAX_DATAGRAM);
  /* The loop's figures count the datagrams too (echo_sizes' five, echoed,
   * and the truncated one, not echoed). */
  gev_stats ls = {0};
  ck_assert_int_eq(gev_loop_stats(lt.l, &ls), 0);
  ck_assert_uint_eq(ls.datagrams_in, 6);
  ck_assert_uint_eq(ls.datagrams_out, 5);
  ck_assert_uint_eq(ls.datagram_bytes_out, 0 + 1 + 1472 + 8192 + 65507);
  ck_assert_uint_eq(ls.datagram_bytes_in,
                    ls.datagram_bytes_out + GEV_UDP_MAX_DATAGRAM);
  ck_assert_uint_eq(ls.datagrams_truncated, 1);
  ck_assert_uint_eq(ls.datagrams_dropped, 0);
  close(fd);
  unlink(cpath);
  gev_udp_free(u);
  th_lt_stop(&lt);
  ck_assert_int_eq(access(spath, F_OK), -1);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- a paced load through the server mode ------------------------------- */

#define LOAD_SOCKS 20
#define LOAD_TOTAL 100000
#define LOAD_WINDOW 8

typedef struct loader {
  int port;
  int n;
  int bad;
} loader;

/* One client socket with LOAD_WINDOW datagrams in flight: each carries its
 * sequence number, and every echo must come back whole, once, in order
 * (one socket hashes to one loop, and loopback does not reorder). */
static void *load_main(void *arg)
{
  loader *ld = arg;
  struct sockaddr_in to = v4("127.0.0.1", ld->port);
  int fd = cli(AF_INET, NULL, 0), sent = 0, got = 0;
  unsigned char buf[64], in[64];

  connect(fd, (struct sockaddr *)&to, sizeof(to));
  while (got < ld->n) {
    while (sent < ld->n && sent - got < LOAD_WINDOW) {
      memset(buf, 0, sizeof(buf));
      memcpy(buf, &sent, sizeof(sent));
      th_fill(buf + 4, sizeof(buf) - 4, (uint32_t)sent);
      if (send(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
        break;
      sent++;
    }
    memset(buf, 0, sizeof(buf));
    memcpy(buf, &got, sizeof(got));
    th_fill(buf + 4, sizeof(buf) - 4, (uint32_t)got);
    if (recv(fd, in, sizeof(in), 0) != (ssize_t)sizeof(in) ||
        memcmp(in, buf, sizeof(buf)) != 0) {
      ld->bad = got + 1; /* lost (timeout) or wrong */
      break;
    }
    got++;
  }
  close(fd);
  return NULL;
}

START_TEST(load_100k)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  gev_options opt = {.num_loops = 2};
  gev_udp_options uo = {.address = "127.0.0.1:0"};
  th_server *ts;
  gev_udp_server *us;
  loader ld[LOAD_SOCKS];
  pthread_t t[LOAD_SOCKS];
  gev_udp_stats st0 = {0}, st1 = {0};

  ts = th_start(&th_echo_handler, &opt);
  ck_assert_int_eq(gev_udp_server_new(&us, ts->s, &echo_h, &uo), 0);
  ck_assert_int_eq(gev_udp_server_num_sockets(us), 2);
  for (int i = 0; i < LOAD_SOCKS; i++) {
    ld[i] = (loader){gev_udp_server_port(us), LOAD_TOTAL / LOAD_SOCKS, 0};
    pthread_create(&t[i], NULL, load_main, &ld[i]);
  }
  for (int i = 0; i < LOAD_SOCKS; i++) {
    th_join(t[i], 300);
    ck_assert_msg(ld[i].bad == 0, "socket %d: datagram %d lost or wrong", i,
                  ld[i].bad - 1);
  }
  ck_assert_int_eq(atomic_load(&n_dgrams), LOAD_TOTAL);
  /* After the loops: a reply can arrive before its loop counts it. */
  th_stop(ts);
  ck_assert_int_eq(atomic_load(&n_closes), 2);
  gev_udp_get_stats(gev_udp_server_socket(us, 0), &st0);
  gev_udp_get_stats(gev_udp_server_socket(us, 1), &st1);
  ck_assert_uint_eq(st0.datagrams_out + st1.datagrams_out, LOAD_TOTAL);
  /* Both loops served: the kernel spread the 20 senders by a hash of
   * their addresses (all on one loop has a chance of 2^-19; with 10
   * senders, 2^-9, it happened once in a CI run). */
  ck_assert_uint_gt(st0.datagrams_in, 0);
  ck_assert_uint_gt(st1.datagrams_in, 0);
  gev_udp_server_free(us);
}
END_TEST

/* The server's port serves TCP and UDP at once; a graceful shutdown closes
 * the datagram sockets too, and gev_udp_server_free works after the
 * server is gone. */
static gev_server *shut_srv;
static void *shut_main(void *arg)
{
  (void)arg;
  gev_server_start(shut_srv);
  return NULL;
}

START_TEST(server_shutdown)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_udp_options uo = {.address = "127.0.0.1:0"};
  gev_udp_server *us;
  pthread_t t;
  int fd;

  ck_assert_int_eq(gev_server_new(&shut_srv, &th_echo_handler, &opt), 0);
  ck_assert_int_eq(gev_udp_server_new(&us, shut_srv, &echo_h, &uo), 0);
  pthread_create(&t, NULL, shut_main, NULL);
  struct sockaddr_in to = v4("127.0.0.1", gev_udp_server_port(us));
  fd = cli(AF_INET, NULL, 0);
  echo_sizes(fd, (struct sockaddr *)&to, sizeof(to));
  /* The server's figures and its Prometheus text count the datagrams. */
  gev_stats ss = {0};
  static char text[16384];
  unsigned long long v0 = 9, v1 = 9;
  ck_assert_int_eq(gev_server_stats(shut_srv, &ss), 0);
  ck_assert_uint_eq(ss.datagrams_in, 5);
  ck_assert_uint_eq(ss.datagrams_out, 5);
  ck_assert_int_lt(gev_server_metrics(shut_srv, text, sizeof(text)),
                   (int)sizeof(text));
  const char *m0 = strstr(text, "gev_datagrams_received_total{loop=\"0\"} ");
  const char *m1 = strstr(text, "gev_datagrams_received_total{loop=\"1\"} ");
  ck_assert_ptr_nonnull(m0);
  ck_assert_ptr_nonnull(m1);
  sscanf(strchr(m0, ' '), "%llu", &v0);
  sscanf(strchr(m1, ' '), "%llu", &v1);
  ck_assert_uint_eq(v0 + v1, 5);
  ck_assert_int_eq(gev_server_shutdown(shut_srv, 5000), 0);
  th_join(t, 20);
  ck_assert_int_eq(atomic_load(&n_closes), 2);
  ck_assert_int_eq(gev_udp_send_to(gev_udp_server_socket(us, 0),
                                   (struct sockaddr *)&to, sizeof(to), "x", 1),
                   -ENOTCONN);
  gev_server_free(shut_srv);
  gev_udp_server_free(us);
  close(fd);
}
END_TEST

/* ---- sends from other threads ------------------------------------------ */

#define SENDERS 8
#define PER_SENDER 2000

typedef struct sender {
  gev_udp *u;
  struct sockaddr_in to;
  int id;
  atomic_int *received;
  int refused, closed_seen, after_close_ok;
} sender;

static void *send_main(void *arg)
{
  sender *s = arg;
  uint64_t end = th_now_ms() + 60000;

  for (int i = 0; i < PER_SENDER; i++) {
    uint32_t msg[2] = {(uint32_t)s->id, (uint32_t)i};
    /* Paced: the receiver's queue must not overflow (no loss). */
    while (i - atomic_load(s->received) / SENDERS > 16 && th_now_ms() < end)
      usleep(100);
    int r = gev_udp_send_to(s->u, (struct sockaddr *)&s->to, sizeof(s->to), msg,
                            sizeof(msg));
    if (r != 0)
      s->refused++;
  }
  return NULL;
}

static void sleep_task(void *arg)
{
  (void)arg;
  usleep(200 * 1000);
}

/* 8 threads send 2,000 datagrams each through one socket; every one
 * arrives exactly once, and they leave in batches. */
START_TEST(send_from_8_threads)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  static unsigned char seen[SENDERS][PER_SENDER];
  th_loop_thread lt;
  sender s[SENDERS];
  pthread_t t[SENDERS];
  atomic_int received = 0;
  struct sockaddr_in ra = v4("127.0.0.1", 0);
  socklen_t len = sizeof(ra);
  int rfd = cli(AF_INET, (struct sockaddr *)&ra, sizeof(ra)), sz = 1 << 22;
  gev_udp_stats st = {0};
  gev_udp *u;

  setsockopt(rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  getsockname(rfd, (struct sockaddr *)&ra, &len);
  th_lt_start(&lt);
  u = open_udp(lt.l, &echo_h, "127.0.0.1:0");
  /* The loop is busy at first: the threads' sends pile up in the socket's
   * inbox and leave in batches once it is free. */
  gev_loop_post(lt.l, sleep_task, NULL);
  for (int i = 0; i < SENDERS; i++) {
    s[i] = (sender){.u = u, .to = ra, .id = i, .received = &received};
    pthread_create(&t[i], NULL, send_main, &s[i]);
  }
  for (int n = 0; n < SENDERS * PER_SENDER; n++) {
    uint32_t msg[2];
    ck_assert_msg(recv(rfd, msg, sizeof(msg), 0) == sizeof(msg),
                  "after %d datagrams: nothing more", n);
    ck_assert(msg[0] < SENDERS && msg[1] < PER_SENDER);
    ck_assert_msg(!seen[msg[0]][msg[1]], "duplicate");
    seen[msg[0]][msg[1]] = 1;
    atomic_fetch_add(&received, 1);
  }
  for (int i = 0; i < SENDERS; i++) {
    th_join(t[i], 60);
    ck_assert_int_eq(s[i].refused, 0);
  }
  /* The last reply can arrive before its loop counts it: a fence. */
  th_run_in_loop(lt.l, th_noop, NULL);
  gev_udp_get_stats(u, &st);
  ck_assert_uint_eq(st.datagrams_out, SENDERS * PER_SENDER);
  ck_assert_msg(st.send_calls < st.datagrams_out / 2,
                "%llu sendmmsg calls for %llu datagrams: not batched",
                (unsigned long long)st.send_calls,
                (unsigned long long)st.datagrams_out);
  close(rfd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

static void *flood_main(void *arg)
{
  sender *s = arg;
  uint64_t end = th_now_ms() + 20000;
  unsigned char buf[512] = {0};

  /* Until it has seen the close a few times (or 20 s). */
  while (s->closed_seen < 10 && th_now_ms() < end) {
    bool closed_before = atomic_load(s->received) != 0;
    int r = gev_udp_send_to(s->u, (struct sockaddr *)&s->to, sizeof(s->to), buf,
                            sizeof(buf));
    if (closed_before && r != -ENOTCONN)
      s->after_close_ok++; /* accepted after gev_udp_close returned */
    if (r == -ENOTCONN)
      s->closed_seen++;
  }
  return NULL;
}

/* 8 threads flood a socket (queues full of their datagrams, -ENOBUFS)
 * while the test closes it: no crash, no leak (the sanitizer and valgrind
 * runs check), every send after the close's return is -ENOTCONN. */
START_TEST(close_while_sending)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  sender s[SENDERS];
  pthread_t t[SENDERS];
  atomic_int closed = 0;
  /* A sink where nothing is read: sends pile up in the kernel, then in
   * the socket's queue. */
  struct sockaddr_in to = v4("127.0.0.1", free_udp_port());
  gev_udp_options o = {.address = "127.0.0.1:0", .send_queue_max = 64 * 1024};
  gev_udp *u;

  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  for (int i = 0; i < SENDERS; i++) {
    s[i] = (sender){.u = u, .to = to, .id = i, .received = &closed};
    pthread_create(&t[i], NULL, flood_main, &s[i]);
  }
  usleep(100 * 1000);
  ck_assert_int_eq(gev_udp_close(u), 0);
  atomic_store(&closed, 1);
  ck_assert_int_eq(gev_udp_close(u), -EALREADY);
  for (int i = 0; i < SENDERS; i++) {
    th_join(t[i], 30);
    ck_assert_int_eq(s[i].after_close_ok, 0);
    ck_assert_int_gt(s[i].closed_seen, 0);
  }
  ck_assert(th_wait_int((const volatile int *)&n_closes, 1, 5000));
  ck_assert_int_eq(gev_udp_send(u, "x", 1), -ENOTCONN);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- the bounded queue -------------------------------------------------- */

typedef struct qrun {
  gev_udp *u;
  struct sockaddr_un to;
  int accepted, refused;
  int first_refused;
} qrun;

static void queue_burst(void *arg)
{
  qrun *q = arg;
  unsigned char buf[1000] = {0};

  for (int i = 0; i < 300; i++) {
    memcpy(buf, &i, sizeof(i));
    int r = gev_udp_send_to(q->u, (struct sockaddr *)&q->to, sizeof(q->to), buf,
                            sizeof(buf));
    if (r == 0) {
      ck_assert_int_eq(q->refused, 0); /* accepted ones are a prefix */
      q->accepted++;
    } else {
      ck_assert_int_eq(r, -ENOBUFS);
      q->refused++;
    }
  }
}

/* A unix peer that does not read makes the kernel push back (EAGAIN): the
 * queue grows to its bound (plus one batch), then sends fail with
 * -ENOBUFS; once the peer reads, every accepted datagram arrives, in
 * order. */
START_TEST(queue_bounded)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  char spath[64], ppath[64], addr[80];
  struct sockaddr_un pa;
  th_loop_thread lt;
  gev_udp_options o = {.send_queue_max = 16 * 1024};
  gev_udp_stats st = {0};
  qrun q = {0};
  int pfd;

  snprintf(spath, sizeof(spath), "/tmp/gev-udp-q-%d", (int)getpid());
  snprintf(ppath, sizeof(ppath), "/tmp/gev-udp-p-%d", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", spath);
  unlink(ppath);
  unix_addr(&pa, ppath);
  pfd = cli(AF_UNIX, (struct sockaddr *)&pa, sizeof(pa));
  o.address = addr;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&q.u, lt.l, &echo_h, &o), 0);
  q.to = pa;
  th_run_in_loop(lt.l, queue_burst, &q);
  ck_assert_int_gt(q.refused, 0);
  ck_assert_int_gt(q.accepted, 10);
  gev_udp_get_stats(q.u, &st);
  ck_assert_uint_gt(st.queued, 0);
  for (int i = 0; i < q.accepted; i++) {
    int seq = -1;
    unsigned char buf[1000];
    ck_assert_int_eq(recv(pfd, buf, sizeof(buf), 0), 1000);
    memcpy(&seq, buf, sizeof(seq));
    ck_assert_int_eq(seq, i);
  }
  /* Not deaf after the push-back and the -ENOBUFS refusals: a datagram
   * from the peer is still read and echoed. */
  {
    struct sockaddr_un sa;
    char buf[8];
    unix_addr(&sa, spath);
    ck_assert_int_eq(
        sendto(pfd, "ping", 4, 0, (struct sockaddr *)&sa, sizeof(sa)), 4);
    ck_assert_int_eq(recv(pfd, buf, sizeof(buf), 0), 4);
    ck_assert(memcmp(buf, "ping", 4) == 0);
  }
  /* Again, and closed with the queue full: what the kernel did not take is
   * dropped, and counted so by the socket and by its loop. */
  gev_stats ls = {0};
  int before = q.accepted;
  q.accepted = q.refused = 0;
  th_run_in_loop(lt.l, queue_burst, &q);
  ck_assert_int_gt(q.refused, 0);
  ck_assert_int_eq(gev_udp_close(q.u), 0);
  th_run_in_loop(lt.l, th_noop, NULL); /* the close ran */
  gev_udp_get_stats(q.u, &st);
  ck_assert_uint_gt(st.dropped, 0);
  ck_assert_uint_eq(st.datagrams_out + st.dropped,
                    (uint64_t)(before + 1 + q.accepted));
  ck_assert_int_eq(gev_loop_stats(lt.l, &ls), 0);
  ck_assert_uint_eq(ls.datagrams_dropped, st.dropped);
  ck_assert_uint_eq(ls.datagrams_out, st.datagrams_out);
  close(pfd);
  unlink(ppath);
  gev_udp_free(q.u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* A graceful shutdown keeps flushing a datagram socket's send queue: the
 * unix peer reads only once the shutdown has begun, and still gets every
 * datagram queued before it, in order; the server ends once the queue is
 * empty, well before the deadline. With a peer that never reads, the
 * deadline ends it and what is left is dropped (counted). */
#define DRAIN_N 200

static void drain_burst(void *arg)
{
  qrun *q = arg;
  unsigned char buf[1000] = {0};

  for (int i = 0; i < DRAIN_N; i++) {
    memcpy(buf, &i, sizeof(i));
    ck_assert_int_eq(gev_udp_send_to(q->u, (struct sockaddr *)&q->to,
                                     sizeof(q->to), buf, sizeof(buf)),
                     0);
  }
}

static void drain_run(bool peer_reads, uint64_t deadline_ms)
{
  char spath[64], ppath[64], addr[80];
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 1};
  gev_udp_options uo = {0};
  gev_udp_server *us;
  gev_udp_stats st = {0};
  pthread_t t;
  qrun q = {0};
  int pfd;

  snprintf(spath, sizeof(spath), "/tmp/gev-udp-ds-%d", (int)getpid());
  snprintf(ppath, sizeof(ppath), "/tmp/gev-udp-dp-%d", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", spath);
  unlink(ppath);
  unix_addr(&q.to, ppath);
  pfd = cli(AF_UNIX, (struct sockaddr *)&q.to, sizeof(q.to));
  uo.address = addr;
  ck_assert_int_eq(gev_server_new(&shut_srv, &th_echo_handler, &opt), 0);
  ck_assert_int_eq(gev_udp_server_new(&us, shut_srv, &echo_h, &uo), 0);
  q.u = gev_udp_server_socket(us, 0);
  pthread_create(&t, NULL, shut_main, NULL);
  th_run_in_loop(gev_server_worker_loop(shut_srv, 0), drain_burst, &q);
  gev_udp_get_stats(q.u, &st);
  ck_assert_uint_gt(st.queued, 0); /* the peer's queue is full */
  ck_assert_int_eq(gev_server_shutdown(shut_srv, deadline_ms), 0);
  /* Long enough for a shutdown that does not wait to be over: then the
   * queue would be gone before the peer reads. */
  usleep(300 * 1000);
  for (int i = 0; peer_reads && i < DRAIN_N; i++) {
    int seq = -1;
    unsigned char buf[1000];
    ck_assert_int_eq(recv(pfd, buf, sizeof(buf), 0), 1000);
    memcpy(&seq, buf, sizeof(seq));
    ck_assert_int_eq(seq, i);
  }
  th_join(t, 20);
  gev_udp_get_stats(q.u, &st);
  if (peer_reads)
    ck_assert_uint_eq(st.dropped, 0);
  else {
    ck_assert_uint_gt(st.dropped, 0);
    ck_assert_uint_eq(st.datagrams_out + st.dropped, DRAIN_N);
  }
  ck_assert_int_eq(atomic_load(&n_closes), 1);
  gev_server_free(shut_srv);
  gev_udp_server_free(us);
  close(pfd);
  unlink(ppath);
}

START_TEST(shutdown_drains_queue)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  drain_run(true, 10000);
}
END_TEST

START_TEST(shutdown_deadline_drops)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  drain_run(false, 300);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

static void ping_task(void *arg)
{
  gev_udp_send(arg, "ping", 4);
}

/* A connected socket whose peer port is closed: the ICMP port-unreachable
 * errors come to on_error as -ECONNREFUSED, and the loop does not spin on
 * them (its passes stay few while errors keep coming). */
START_TEST(icmp_refused)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  char peer[32];
  gev_udp_options o = {0};
  gev_stats before = {0}, after = {0};
  gev_udp *u;

  snprintf(peer, sizeof(peer), "127.0.0.1:%d", free_udp_port());
  o.connect = peer;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  gev_loop_stats(lt.l, &before);
  for (int i = 0; i < 10; i++) {
    th_run_in_loop(lt.l, ping_task, u);
    usleep(20 * 1000);
  }
  ck_assert(th_wait_int((const volatile int *)&n_errors, 5, 5000));
  ck_assert_int_eq(atomic_load(&last_error), -ECONNREFUSED);
  usleep(100 * 1000);
  gev_loop_stats(lt.l, &after);
  ck_assert_msg(after.loop_passes - before.loop_passes < 200,
                "%llu passes for 10 datagrams: spinning",
                (unsigned long long)(after.loop_passes - before.loop_passes));
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

START_TEST(bad_input)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp_options o = {.address = "127.0.0.1:0"};
  gev_udp *u, *v;
  struct sockaddr_in to = v4("127.0.0.1", 9);
  char addr[32];
  static char big[GEV_UDP_MAX_DATAGRAM + 1];

  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(NULL, lt.l, &echo_h, &o), -EINVAL);
  ck_assert_int_eq(gev_udp_new(&u, NULL, &echo_h, &o), -EINVAL);
  o.batch = GEV_UDP_BATCH_MAX + 1;
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), -EINVAL);
  ck_assert_ptr_null(u);
  o.batch = 0;
  o.address = "nonsense";
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), -EINVAL);
  o.address = "127.0.0.1:0";
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", gev_udp_port(u));
  o.address = addr;
  ck_assert_int_eq(gev_udp_new(&v, lt.l, &echo_h, &o), -EADDRINUSE);
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), big, sizeof(big)),
      -EMSGSIZE);
  ck_assert_int_eq(gev_udp_send(u, "x", 1), -EDESTADDRREQ);
  ck_assert_int_eq(gev_udp_send_to(u, (struct sockaddr *)&to, 1, "x", 1),
                   -EINVAL);
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), NULL, 1), -EINVAL);
  ck_assert_int_eq(gev_udp_connect(u, "[::1]:53"), -EINVAL);
  ck_assert_int_eq(gev_udp_multicast(u, "not-a-group", NULL, true), -EINVAL);
  ck_assert_int_eq(gev_udp_multicast_options(u, 256, true, NULL), -EINVAL);
  gev_udp_free(u);
  gev_udp_free(NULL);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* Connected mode: gev_udp_connect, then gev_udp_send reaches the peer, and
 * the peer's answer comes back. */
START_TEST(connected_mode)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  struct sockaddr_in pa = v4("127.0.0.1", 0);
  socklen_t len = sizeof(pa);
  char peer[32], buf[16];
  int pfd = cli(AF_INET, (struct sockaddr *)&pa, sizeof(pa));
  gev_udp_options o = {0};
  gev_udp *u;
  struct sockaddr_in from;

  getsockname(pfd, (struct sockaddr *)&pa, &len);
  snprintf(peer, sizeof(peer), "127.0.0.1:%d", ntohs(pa.sin_port));
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  ck_assert_int_eq(gev_udp_connect(u, peer), 0);
  ck_assert_int_eq(gev_udp_send(u, "hello", 5), 0);
  len = sizeof(from);
  ck_assert_int_eq(
      recvfrom(pfd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len), 5);
  ck_assert_int_eq(ntohs(from.sin_port), gev_udp_port(u));
  /* The gev side echoes what the peer answers: a round trip back. */
  sendto(pfd, "again", 5, 0, (struct sockaddr *)&from, len);
  ck_assert_int_eq(recv(pfd, buf, sizeof(buf), 0), 5);
  ck_assert(memcmp(buf, "again", 5) == 0);
  close(pfd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* A unix datagram server whose peer c1 stops reading: once c1's queue is
 * full (net.unix.max_dgram_qlen, 10 by default) the kernel refuses it
 * with EAGAIN, but poll keeps saying the socket is writable. Before: one
 * sendmmsg per wake-up (100,000 in 500 ms), and c2's datagram waited
 * behind c1's forever. Now c2's goes at once, the retries are few, and
 * when c1 reads it gets all of its datagrams, in order. */
START_TEST(unix_full_peer_no_spin)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  char spath[64], p1[64], p2[64], addr[80], buf[16];
  struct sockaddr_un c1, c2;
  th_loop_thread lt;
  gev_udp_stats s0, s1;
  gev_udp *u;
  int f1, f2;

  snprintf(spath, sizeof(spath), "/tmp/gev-udp-fs-%d", (int)getpid());
  snprintf(p1, sizeof(p1), "/tmp/gev-udp-f1-%d", (int)getpid());
  snprintf(p2, sizeof(p2), "/tmp/gev-udp-f2-%d", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", spath);
  unlink(p1);
  unlink(p2);
  unix_addr(&c1, p1);
  unix_addr(&c2, p2);
  f1 = cli(AF_UNIX, (struct sockaddr *)&c1, sizeof(c1));
  f2 = cli(AF_UNIX, (struct sockaddr *)&c2, sizeof(c2));
  th_lt_start(&lt);
  u = open_udp(lt.l, &count_h, addr);
  for (int i = 0; i < 50; i++) {
    snprintf(buf, sizeof(buf), "%d", i);
    ck_assert_int_eq(gev_udp_send_to(u, (struct sockaddr *)&c1, sizeof(c1), buf,
                                     strlen(buf)),
                     0);
  }
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&c2, sizeof(c2), "hello", 5), 0);
  ck_assert_int_eq(recv(f2, buf, sizeof(buf), 0), 5); /* 5 s timeout */
  ck_assert(memcmp(buf, "hello", 5) == 0);
  ck_assert_int_eq(gev_udp_get_stats(u, &s0), 0);
  usleep(300 * 1000);
  ck_assert_int_eq(gev_udp_get_stats(u, &s1), 0);
  /* Retries back off to one per 64 ms: a handful in 300 ms. */
  ck_assert_uint_le(s1.send_calls - s0.send_calls, 30);
  for (int i = 0; i < 50; i++) {
    char want[16];
    ssize_t n = recv(f1, buf, sizeof(buf) - 1, 0);

    ck_assert_int_ge(n, 1);
    buf[n] = '\0';
    snprintf(want, sizeof(want), "%d", i);
    ck_assert_str_eq(buf, want);
  }
  ck_assert_int_eq(atomic_load(&n_errors), 0);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  close(f1);
  close(f2);
  unlink(p1);
  unlink(p2);
}
END_TEST

/* A local peer may attach file descriptors (SCM_RIGHTS) to a unix
 * datagram. With a control buffer the kernel installs them in this
 * process, where nothing would close them; pktinfo (meaningless on a unix
 * socket) must not bring one. 20 datagrams x 3 fds each. */
START_TEST(unix_passed_fds_dropped)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  char spath[64], addr[80];
  struct sockaddr_un sa;
  th_loop_thread lt;
  gev_udp_options o = {.pktinfo = true};
  gev_udp *u;
  int fd, before;

  snprintf(spath, sizeof(spath), "/tmp/gev-udp-scm-%d", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", spath);
  o.address = addr;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &count_h, &o), 0);
  unix_addr(&sa, spath);
  fd = cli(AF_UNIX, NULL, 0);
  th_run_in_loop(lt.l, th_noop, NULL); /* started */
  before = th_count_fds();
  for (int i = 0; i < 20; i++) {
    int fds[3] = {0, 1, 2};
    _Alignas(struct cmsghdr) unsigned char cbuf[CMSG_SPACE(sizeof(fds))];
    struct iovec iov = {(void *)"x", 1};
    struct msghdr m = {.msg_name = &sa,
                       .msg_namelen = sizeof(sa),
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = cbuf,
                       .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

    memset(cbuf, 0, sizeof(cbuf));
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(cm), fds, sizeof(fds));
    ck_assert_int_eq(sendmsg(fd, &m, 0), 1);
  }
  ck_assert(th_wait_int((const volatile int *)&n_dgrams, 20, 5000));
  ck_assert_int_eq(th_count_fds(), before);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- options ------------------------------------------------------------ */

/* IP_PKTINFO on a wildcard bind tells which local address was asked:
 * 127.0.0.2 is as local as 127.0.0.1 on loopback. */
START_TEST(pktinfo_local)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp_options o = {.address = "0.0.0.0:0", .pktinfo = true};
  char want[64], buf[8];
  gev_udp *u;
  int fd = cli(AF_INET, NULL, 0);

  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  struct sockaddr_in to = v4("127.0.0.2", gev_udp_port(u));
  sendto(fd, "hi", 2, 0, (struct sockaddr *)&to, sizeof(to));
  ck_assert_int_eq(recv(fd, buf, sizeof(buf), 0), 2);
  snprintf(want, sizeof(want), "127.0.0.2:%d", gev_udp_port(u));
  th_run_in_loop(lt.l, th_noop, NULL); /* last_local was written there */
  ck_assert_str_eq(last_local, want);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

static void reply_dgram(gev_udp *u, const gev_udp_datagram *d)
{
  atomic_fetch_add(&n_dgrams, 1);
  gev_udp_reply(u, d, d->data, d->len);
}

static const gev_udp_handler reply_h = {reply_dgram, count_error, count_close};

/* The IP of an IPv4 or IPv6 address, as text. */
static void ip_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
  if (a->ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out,
              (socklen_t)cap);
  else
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, out,
              (socklen_t)cap);
}

/* The source address of the reply to a datagram sent from `fd` (of
 * `family`) to ip:port; over IPv6 an IPv4 address is ::ffff:a.b.c.d. */
static void source_of_reply(int fd, int family, const char *ip, int port,
                            char *out, size_t cap)
{
  struct sockaddr_storage to = {.ss_family = (sa_family_t)family}, from;
  struct sockaddr_in *t4 = (struct sockaddr_in *)&to;
  struct sockaddr_in6 *t6 = (struct sockaddr_in6 *)&to;
  socklen_t len = sizeof(from),
            tlen = family == AF_INET ? sizeof(*t4) : sizeof(*t6);
  char buf[64];

  if (family == AF_INET) {
    t4->sin_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &t4->sin_addr), 1);
  } else {
    t6->sin6_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &t6->sin6_addr), 1);
  }
  ck_assert_int_eq(sendto(fd, ip, strlen(ip), 0, (struct sockaddr *)&to, tlen),
                   (ssize_t)strlen(ip));
  ck_assert_int_eq(
      recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len),
      (ssize_t)strlen(ip));
  ip_text(&from, out, cap);
}

/* gev_udp_reply from this thread (through the send queue) to peer, as if
 * it had sent to local: the source of what `fd` receives. */
static void source_of_queued_reply(gev_udp *u, int fd, struct sockaddr *peer,
                                   socklen_t peer_len, struct sockaddr *local,
                                   socklen_t local_len, char *out, size_t cap)
{
  gev_udp_datagram d = {.peer = peer,
                        .peer_len = peer_len,
                        .local = local,
                        .local_len = local_len};
  struct sockaddr_storage from;
  socklen_t len = sizeof(from);
  char buf[8];

  ck_assert_int_eq(gev_udp_reply(u, &d, "far", 3), 0);
  ck_assert_int_eq(
      recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len), 3);
  ip_text(&from, out, cap);
}

/* gev_udp_reply on a wildcard bind answers from the address the client
 * sent to: 127.0.0.2 and 127.0.0.1 are both local on loopback, and a
 * reply the kernel routed itself would leave from 127.0.0.1 either way.
 * In the loop (the outgoing batch) and from another thread (the queue). */
START_TEST(reply_from_local)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp_options o = {.address = "0.0.0.0:0", .pktinfo = true};
  struct sockaddr_in me = v4("127.0.0.1", 0), local;
  socklen_t len = sizeof(me);
  char src[INET_ADDRSTRLEN];
  gev_udp *u;
  int fd = cli(AF_INET, (struct sockaddr *)&me, sizeof(me));

  getsockname(fd, (struct sockaddr *)&me, &len);
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &reply_h, &o), 0);
  source_of_reply(fd, AF_INET, "127.0.0.2", gev_udp_port(u), src, sizeof(src));
  ck_assert_str_eq(src, "127.0.0.2");
  source_of_reply(fd, AF_INET, "127.0.0.1", gev_udp_port(u), src, sizeof(src));
  ck_assert_str_eq(src, "127.0.0.1");
  source_of_reply(fd, AF_INET, "127.0.0.2", gev_udp_port(u), src, sizeof(src));
  ck_assert_str_eq(src, "127.0.0.2");

  local = v4("127.0.0.2", gev_udp_port(u));
  source_of_queued_reply(u, fd, (struct sockaddr *)&me, sizeof(me),
                         (struct sockaddr *)&local, sizeof(local), src,
                         sizeof(src));
  ck_assert_str_eq(src, "127.0.0.2");
  gev_udp_datagram d = {.peer = (struct sockaddr *)&me,
                        .local = (struct sockaddr *)&local,
                        .local_len = sizeof(local)};
  ck_assert_int_eq(gev_udp_reply(u, &d, "x", 1), -EDESTADDRREQ);
  ck_assert_int_eq(gev_udp_reply(u, NULL, "x", 1), -EINVAL);
  ck_assert_int_eq(atomic_load(&n_errors), 0);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* gev_udp_reply over IPv6: "[::]" is dual stack, so IPv4 datagrams
 * arrive with a mapped local address (IPV6_PKTINFO says ::ffff:127.0.0.2)
 * and the reply must leave from it as IPv4 (the kernel takes a mapped
 * IPV6_PKTINFO source for an IPv4 destination); an IPv6 one leaves from
 * ::1. A malformed source cmsg fails the send (on_error), a dropped one
 * answers from 127.0.0.1. In the loop and from another thread. */
START_TEST(reply_from_local_v6)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp_options o = {.address = "[::]:0", .pktinfo = true};
  struct sockaddr_in6 me = {.sin6_family = AF_INET6,
                            .sin6_addr = IN6ADDR_ANY_INIT},
                      local = {.sin6_family = AF_INET6};
  socklen_t len = sizeof(me);
  char src[INET6_ADDRSTRLEN];
  gev_udp *u;
  int fd = cli(AF_INET6, (struct sockaddr *)&me, sizeof(me));

  getsockname(fd, (struct sockaddr *)&me, &len);
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &reply_h, &o), 0);
  source_of_reply(fd, AF_INET6, "::ffff:127.0.0.2", gev_udp_port(u), src,
                  sizeof(src));
  ck_assert_str_eq(src, "::ffff:127.0.0.2");
  source_of_reply(fd, AF_INET6, "::1", gev_udp_port(u), src, sizeof(src));
  ck_assert_str_eq(src, "::1");
  source_of_reply(fd, AF_INET6, "::ffff:127.0.0.3", gev_udp_port(u), src,
                  sizeof(src));
  ck_assert_str_eq(src, "::ffff:127.0.0.3");

  /* From this thread (the send queue) to a mapped peer. */
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &me.sin6_addr);
  inet_pton(AF_INET6, "::ffff:127.0.0.2", &local.sin6_addr);
  local.sin6_port = htons((uint16_t)gev_udp_port(u));
  source_of_queued_reply(u, fd, (struct sockaddr *)&me, sizeof(me),
                         (struct sockaddr *)&local, sizeof(local), src,
                         sizeof(src));
  ck_assert_str_eq(src, "::ffff:127.0.0.2");
  struct sockaddr_in wrong = v4("127.0.0.2", 1);
  gev_udp_datagram d = {.peer = (struct sockaddr *)&me,
                        .peer_len = sizeof(me),
                        .local = (struct sockaddr *)&wrong,
                        .local_len = sizeof(wrong)};
  ck_assert_int_eq(gev_udp_reply(u, &d, "x", 1), -EINVAL);
  ck_assert_int_eq(atomic_load(&n_errors), 0);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

static void *run_loop(void *l)
{
  gev_loop_run(l);
  return NULL;
}

/* The dual-stack case in a network namespace of its own where
 * net.ipv6.bindv6only is 1 (a forked child: unshare wants one thread, and
 * the host's setting stays as it is). 0 when an IPv4 client's datagram to
 * "[::]" was echoed, 1 when it was not, 2 when the namespace could not be
 * made (printed). No ck_assert here: it would report from the child. */
static int dual_stack_child(void)
{
  struct ifreq ifr = {0};
  char buf[8];
  int s, fd, r = 1;
  FILE *f;

  if (unshare(CLONE_NEWNET) < 0) {
    printf("test-udp: no network namespace (%s): needs CAP_SYS_ADMIN\n",
           strerror(errno));
    return 2;
  }
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
  s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
    return 2;
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
    return 2;
  close(s);
  if (!(f = fopen("/proc/sys/net/ipv6/bindv6only", "w")))
    return 2;
  fputs("1\n", f);
  if (fclose(f) != 0)
    return 2;

  gev_loop *l;
  gev_udp *u;
  gev_udp_options o = {.address = "[::]:0"};
  pthread_t t;
  struct timeval tv = {2, 0};

  if (gev_loop_new(&l) < 0)
    return 2;
  if (gev_udp_new(&u, l, &echo_h, &o) < 0)
    return 1;
  if (pthread_create(&t, NULL, run_loop, l) != 0)
    return 2;
  fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct sockaddr_in to = v4("127.0.0.1", gev_udp_port(u));
  if (sendto(fd, "v4", 2, 0, (struct sockaddr *)&to, sizeof(to)) == 2 &&
      recv(fd, buf, sizeof(buf), 0) == 2)
    r = 0;
  close(fd);
  gev_udp_free(u);
  gev_loop_stop(l);
  pthread_join(t, NULL);
  gev_loop_free(l);
  return r;
}

/* "[::]" serves IPv4 whatever net.ipv6.bindv6only says, as a stream
 * listener's does: with the sysctl at 1 a socket left to its default
 * would be IPv6 only and not hear this IPv4 client. */
START_TEST(wildcard_v6_dual_stack)
{
  int status;
  pid_t pid;

  fflush(stdout);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(dual_stack_child());
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  if (WEXITSTATUS(status) == 2 && !getenv("GEV_REQUIRE_NETNS")) {
    printf("test-udp: wildcard_v6_dual_stack skipped\n");
    return;
  }
  ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* Sending to a broadcast address needs SO_BROADCAST: without it the
 * kernel refuses (on_error: -EACCES); with it the datagram arrives. */
START_TEST(broadcast)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  struct sockaddr_in ra = v4("0.0.0.0", 0);
  socklen_t len = sizeof(ra);
  int rfd = cli(AF_INET, (struct sockaddr *)&ra, sizeof(ra));
  gev_udp *u;
  char buf[8];

  getsockname(rfd, (struct sockaddr *)&ra, &len);
  struct sockaddr_in to = v4("127.255.255.255", ntohs(ra.sin_port));
  th_lt_start(&lt);
  u = open_udp(lt.l, &echo_h, "0.0.0.0:0");
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), "no", 2), 0);
  ck_assert(th_wait_int((const volatile int *)&n_errors, 1, 5000));
  ck_assert_int_eq(atomic_load(&last_error), -EACCES);
  ck_assert_int_eq(gev_udp_set_broadcast(u, true), 0);
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), "yes", 3), 0);
  ck_assert_int_eq(recv(rfd, buf, sizeof(buf), 0), 3);
  ck_assert(memcmp(buf, "yes", 3) == 0);
  close(rfd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* gev_udp_reply to a broadcast: the reply cannot leave from
 * 127.255.255.255 (the kernel refused it, -ENETUNREACH, and the client
 * heard nothing); it leaves from the interface's address, 127.0.0.1,
 * which is also what datagram.local shows. */
static char reply_local[64];

static void reply_note_local(gev_udp *u, const gev_udp_datagram *d)
{
  const struct sockaddr_in *a = (const struct sockaddr_in *)d->local;

  if (a)
    inet_ntop(AF_INET, &a->sin_addr, reply_local, sizeof(reply_local));
  reply_dgram(u, d);
}

static const gev_udp_handler reply_note_h = {reply_note_local, count_error,
                                             count_close};

START_TEST(reply_to_broadcast)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp_options o = {.address = "0.0.0.0:0", .pktinfo = true};
  struct sockaddr_in from;
  socklen_t len = sizeof(from);
  char buf[8], src[INET_ADDRSTRLEN];
  int one = 1, fd = cli(AF_INET, NULL, 0);
  gev_udp *u;

  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)),
                   0);
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &reply_note_h, &o), 0);
  struct sockaddr_in to = v4("127.255.255.255", gev_udp_port(u));
  ck_assert_int_eq(sendto(fd, "all", 3, 0, (struct sockaddr *)&to, sizeof(to)),
                   3);
  ck_assert_int_eq(
      recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len), 3);
  inet_ntop(AF_INET, &from.sin_addr, src, sizeof(src));
  ck_assert_str_eq(src, "127.0.0.1");
  th_run_in_loop(lt.l, th_noop, NULL); /* reply_local was written there */
  ck_assert_str_eq(reply_local, "127.0.0.1");
  ck_assert_int_eq(atomic_load(&n_errors), 0);
  close(fd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* Multicast on loopback: a socket joined to 239.255.0.1 on 127.0.0.1
 * receives what a sender sends to the group through 127.0.0.1; after
 * leaving, it receives nothing more. */
START_TEST(multicast)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  gev_udp *u, *snd;

  th_lt_start(&lt);
  u = open_udp(lt.l, &count_h, "0.0.0.0:0");
  snd = open_udp(lt.l, &count_h, "127.0.0.1:0");
  ck_assert_int_eq(gev_udp_multicast(u, "239.255.0.1", "127.0.0.1", true), 0);
  ck_assert_int_eq(gev_udp_multicast_options(snd, 1, true, "127.0.0.1"), 0);
  struct sockaddr_in to = v4("239.255.0.1", gev_udp_port(u));
  ck_assert_int_eq(
      gev_udp_send_to(snd, (struct sockaddr *)&to, sizeof(to), "mc", 2), 0);
  ck_assert(th_wait_int((const volatile int *)&n_dgrams, 1, 5000));
  ck_assert_int_eq(gev_udp_multicast(u, "239.255.0.1", "127.0.0.1", false), 0);
  ck_assert_int_eq(gev_udp_multicast(u, "239.255.0.1", "127.0.0.1", false),
                   -EADDRNOTAVAIL);
  gev_udp_free(snd);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* Whether /proc/net/igmp6 lists `hex` (a group, 32 hex digits) on lo. */
static bool lo_member(const char *hex)
{
  char line[256], dev[32], grp[64];
  bool found = false;
  FILE *f = fopen("/proc/net/igmp6", "r");

  ck_assert_ptr_nonnull(f);
  while (!found && fgets(line, sizeof(line), f))
    found = sscanf(line, "%*d %31s %63s", dev, grp) == 2 &&
            strcmp(dev, "lo") == 0 && strcmp(grp, hex) == 0;
  fclose(f);
  return found;
}

/* IPv6 multicast on lo: joining puts the group on lo's membership list
 * (/proc/net/igmp6), leaving takes it off, a second leave fails. What
 * cannot be tested here: a datagram to the group over lo. lo has no
 * MULTICAST flag, so the kernel has no route for ff00::/8 on it and
 * refuses the send (ENETUNREACH, which on_error reports); IPv4 multicast
 * on lo works (the multicast case) because IPv4 routes 239.0.0.0/8 by
 * the interface address given. */
START_TEST(multicast_v6)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  th_loop_thread lt;
  unsigned g = (unsigned)getpid() & 0xffff;
  char group[64], hex[64];
  struct sockaddr_in6 to = {.sin6_family = AF_INET6};
  gev_udp *u;

  snprintf(group, sizeof(group), "ff02::1:%x", g);
  snprintf(hex, sizeof(hex), "ff02000000000000000000000001%04x", g);
  th_lt_start(&lt);
  u = open_udp(lt.l, &count_h, "[::]:0");
  ck_assert(!lo_member(hex));
  ck_assert_int_eq(gev_udp_multicast(u, group, "lo", true), 0);
  ck_assert(lo_member(hex));
  ck_assert_int_eq(gev_udp_multicast(u, group, "lo", false), 0);
  ck_assert(!lo_member(hex));
  ck_assert_int_eq(gev_udp_multicast(u, group, "lo", false), -EADDRNOTAVAIL);
  ck_assert_int_eq(gev_udp_multicast(u, group, "no-such-if0", true), -ENODEV);
  ck_assert_int_eq(gev_udp_multicast(u, "239.255.0.1", "lo", true), -EINVAL);
  ck_assert_int_eq(gev_udp_multicast_options(u, 1, true, "lo"), 0);
  ck_assert_int_eq(gev_udp_multicast(u, group, "lo", true), 0);
  inet_pton(AF_INET6, group, &to.sin6_addr);
  to.sin6_port = htons((uint16_t)gev_udp_port(u));
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), "mc", 2), 0);
  ck_assert(th_wait_int((const volatile int *)&n_errors, 1, 5000));
  ck_assert_int_eq(atomic_load(&last_error), -ENETUNREACH);
  gev_udp_free(u); /* leaves the group with the socket */
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  ck_assert(!lo_member(hex));
}
END_TEST

/* The socket options reach the socket; reuse_port lets two sockets
 * share a port (and without it the second bind fails: bad_input). */
START_TEST(options_applied)
{
  th_loop_thread lt;
  gev_udp_options o = {.address = "127.0.0.1:0",
                       .reuse_port = true,
                       .rcvbuf = 100000,
                       .sndbuf = 60000,
                       .tos = 0x10};
  gev_udp *u, *v;
  char addr[32];
  int val = 0;
  socklen_t len = sizeof(val);

  reset();
  th_lt_start(&lt);
  ck_assert_int_eq(gev_udp_new(&u, lt.l, &echo_h, &o), 0);
  getsockopt(gev_udp_fd(u), SOL_SOCKET, SO_RCVBUF, &val, &len);
  ck_assert_int_ge(val, 100000); /* the kernel doubles it */
  getsockopt(gev_udp_fd(u), SOL_SOCKET, SO_SNDBUF, &val, &len);
  ck_assert_int_ge(val, 60000);
  getsockopt(gev_udp_fd(u), IPPROTO_IP, IP_TOS, &val, &len);
  ck_assert_int_eq(val, 0x10);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", gev_udp_port(u));
  o.address = addr;
  ck_assert_int_eq(gev_udp_new(&v, lt.l, &echo_h, &o), 0);
  ck_assert_int_eq(gev_udp_port(v), gev_udp_port(u));
  ck_assert_ptr_eq(gev_udp_loop(u), lt.l);
  gev_udp_free(v);
  gev_udp_free(u);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
}
END_TEST

/* A socket the loop never ran: no callback, nothing left (the leak checks
 * see to that), also with sends queued. */
START_TEST(never_started)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  gev_loop *l;
  gev_udp *u;
  struct sockaddr_in to = v4("127.0.0.1", 9);

  ck_assert_int_eq(gev_loop_new(&l), 0);
  u = open_udp(l, &echo_h, "127.0.0.1:0");
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), "x", 1), 0);
  gev_loop_free(l);
  /* Closed with its loop: a send must not post to the freed loop (it did,
   * a use after free under ASan). */
  ck_assert_int_eq(
      gev_udp_send_to(u, (struct sockaddr *)&to, sizeof(to), "y", 1),
      -ENOTCONN);
  ck_assert_int_eq(gev_udp_close(u), -EALREADY);
  gev_udp_free(u);
  ck_assert_int_eq(atomic_load(&n_closes), 0);
}
END_TEST

/* Port 0 with reuse_port: the kernel may give a SO_REUSEPORT socket a port
 * that another process's SO_REUSEPORT sockets hold (same user), and the
 * two would share its datagrams. With 8,000 such sockets held here (over a
 * quarter of the ephemeral range), 40 reuse_port sockets on port 0 must
 * each get a port nobody holds; by chance that would pass once in ~10^6. */
enum { HELD = 8000, TRIES = 40 };

START_TEST(port0_reuse_port_not_shared)
{
  reset(); /* CK_FORK=no (valgrind) runs every case in one process */
  static unsigned char held_port[65536];
  static int held[HELD];
  struct rlimit rl;
  gev_udp_options uo = {.address = "127.0.0.1:0", .reuse_port = true};
  gev_loop *l;
  int n = 0, one = 1;

  memset(held_port, 0, sizeof(held_port));
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < HELD + 200 && rl.rlim_max >= HELD + 200) {
    rl.rlim_cur = HELD + 200;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  for (; n < HELD; n++) {
    struct sockaddr_in sin = v4("127.0.0.1", 0);
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
      break;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    held_port[ntohs(sin.sin_port)] = 1;
    held[n] = fd;
  }
  ck_assert_int_ge(n, HELD / 2); /* the fd limit allows that much */
  ck_assert_int_eq(gev_loop_new(&l), 0);
  for (int i = 0; i < TRIES; i++) {
    gev_udp *u;
    int port;

    ck_assert_int_eq(gev_udp_new(&u, l, &echo_h, &uo), 0);
    port = gev_udp_port(u);
    ck_assert_msg(!held_port[port], "try %d: port %d is another socket's", i,
                  port);
    gev_udp_close(u);
    gev_udp_free(u);
  }
  gev_loop_free(l);
  for (int i = 0; i < n; i++)
    close(held[i]);
}
END_TEST

static Suite *udp_suite(void)
{
  const th_case cases[] = {
      {"sizes_v4", sizes_v4, 30},
      {"sizes_v6", sizes_v6, 30},
      {"unix_dgram", unix_dgram, 30},
      {"load_100k", load_100k, 600},
      {"server_shutdown", server_shutdown, 30},
      {"send_from_8_threads", send_from_8_threads, 120},
      {"close_while_sending", close_while_sending, 60},
      {"queue_bounded", queue_bounded, 30},
      {"shutdown_drains_queue", shutdown_drains_queue, 60},
      {"shutdown_deadline_drops", shutdown_deadline_drops, 60},
      {"icmp_refused", icmp_refused, 30},
      {"bad_input", bad_input, 30},
      {"connected_mode", connected_mode, 30},
      {"pktinfo_local", pktinfo_local, 30},
      {"reply_from_local", reply_from_local, 30},
      {"reply_from_local_v6", reply_from_local_v6, 30},
      {"unix_passed_fds_dropped", unix_passed_fds_dropped, 30},
      {"unix_full_peer_no_spin", unix_full_peer_no_spin, 30},
      {"reply_to_broadcast", reply_to_broadcast, 30},
      {"wildcard_v6_dual_stack", wildcard_v6_dual_stack, 30},
      {"broadcast", broadcast, 30},
      {"multicast", multicast, 30},
      {"multicast_v6", multicast_v6, 30},
      {"never_started", never_started, 30},
      {"port0_reuse_port_not_shared", port0_reuse_port_not_shared, 60},
      {"options_applied", options_applied, 30},
  };
  return th_suite("udp", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(udp_suite());
}
