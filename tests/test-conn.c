/*
 * test-conn.c - connections: the echo path under load, framing with partial
 * input, sends from other threads, callback order and threads, peer EOF,
 * close and half-close, backpressure, TCP_NODELAY and SIGPIPE.
 *
 * Every wait is bounded; every payload is verified byte for byte against a
 * pattern generator. Globals are reset at the start of each test so the
 * suite also runs with CK_FORK=no (valgrind).
 */
#include "helpers.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

/* ---- shared test scaffolding ------------------------------------------ */

/* A byte stream derived from a seed; sender and verifier each keep one, so
 * any chunking on either side reproduces the same bytes. */
typedef struct pat {
  uint32_t x;
} pat;

static void pat_init(pat *p, uint32_t seed)
{
  p->x = (seed * 2654435761u) ^ 0x9e3779b9u;
  if (p->x == 0)
    p->x = 1;
}

static unsigned char pat_byte(pat *p)
{
  uint32_t x = p->x;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  p->x = x;
  return (unsigned char)(x >> 24);
}

static void pat_fill(pat *p, unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    b[i] = pat_byte(p);
}

/* Index of the first byte that differs from the stream, or n. */
static size_t pat_check(pat *p, const unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (b[i] != pat_byte(p))
      return i;
  return n;
}

static void set_rst_on_close(int fd)
{
  struct linger lg = {1, 0};
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
}

/* ---- 1. echo: 200 concurrent clients, random sizes up to 1 MiB --------- */

#define EC_CLIENTS 200
#define EC_THREADS 4
#define EC_CHUNK 16384

typedef struct ec_stream {
  int fd;
  size_t total, gen, sent, recvd;
  pat tx, rx;
  size_t coff, clen;
  unsigned char chunk[EC_CHUNK];
} ec_stream;

typedef struct ec_client {
  int port, n;
  ec_stream *st;
  char err[256];
} ec_client;

static bool ec_step(ec_client *w, ec_stream *s, short revents,
                    unsigned char *buf, size_t bufsz)
{
  if ((revents & POLLOUT) && s->sent < s->total) {
    if (s->coff == s->clen) {
      size_t m = s->total - s->gen < EC_CHUNK ? s->total - s->gen : EC_CHUNK;
      pat_fill(&s->tx, s->chunk, m);
      s->gen += m;
      s->coff = 0;
      s->clen = m;
    }
    ssize_t k = send(s->fd, s->chunk + s->coff, s->clen - s->coff,
                     MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k > 0) {
      s->coff += (size_t)k;
      s->sent += (size_t)k;
    } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
      snprintf(w->err, sizeof(w->err), "send: %s", strerror(errno));
      return false;
    }
  }
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    ssize_t k = recv(s->fd, buf, bufsz, MSG_DONTWAIT);
    if (k == 0) {
      snprintf(w->err, sizeof(w->err), "early EOF after %zu of %zu bytes",
               s->recvd, s->total);
      return false;
    }
    if (k < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return true;
      snprintf(w->err, sizeof(w->err), "recv: %s", strerror(errno));
      return false;
    }
    if (s->recvd + (size_t)k > s->total) {
      snprintf(w->err, sizeof(w->err), "%zu bytes more than sent",
               s->recvd + (size_t)k - s->total);
      return false;
    }
    size_t bad = pat_check(&s->rx, buf, (size_t)k);
    if (bad != (size_t)k) {
      snprintf(w->err, sizeof(w->err), "byte %zu of %zu differs",
               s->recvd + bad, s->total);
      return false;
    }
    s->recvd += (size_t)k;
    if (s->recvd == s->total) {
      close(s->fd);
      s->fd = -1;
    }
  }
  return true;
}

static void *ec_client_main(void *arg)
{
  ec_client *w = arg;
  struct pollfd pfd[EC_CLIENTS];
  int idx[EC_CLIENTS], left = w->n;
  static _Thread_local unsigned char buf[65536];
  uint64_t deadline = th_now_ms() + 60000;

  for (int i = 0; i < w->n; i++) {
    w->st[i].fd = th_connect(w->port);
    if (w->st[i].fd < 0) {
      snprintf(w->err, sizeof(w->err), "connect failed: %s", strerror(errno));
      return NULL;
    }
  }
  while (left > 0) {
    int np = 0, r;
    if (th_now_ms() > deadline) {
      snprintf(w->err, sizeof(w->err), "%d streams unfinished after 60 s",
               left);
      break;
    }
    for (int i = 0; i < w->n; i++) {
      if (w->st[i].fd < 0)
        continue;
      pfd[np].fd = w->st[i].fd;
      pfd[np].events = POLLIN;
      if (w->st[i].sent < w->st[i].total)
        pfd[np].events |= POLLOUT;
      pfd[np].revents = 0;
      idx[np++] = i;
    }
    r = poll(pfd, (nfds_t)np, 100);
    if (r < 0 && errno != EINTR) {
      snprintf(w->err, sizeof(w->err), "poll: %s", strerror(errno));
      break;
    }
    for (int k = 0; k < np && r > 0; k++) {
      ec_stream *s = &w->st[idx[k]];
      if (!pfd[k].revents)
        continue;
      if (!ec_step(w, s, pfd[k].revents, buf, sizeof(buf)))
        goto out;
      if (s->fd < 0)
        left--;
    }
  }
out:
  for (int i = 0; i < w->n; i++)
    if (w->st[i].fd >= 0)
      close(w->st[i].fd);
  return NULL;
}

/* The server's sockets take little, so replies often wait in the
 * connections' own output while more input arrives: the echo runs through
 * the queued path, not only straight to the kernel. */
static void ec_connect(gev_conn *c)
{
  int small = 16384;

  setsockopt(gev_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  th_count_connect(c);
}

static const gev_handler ec_handler = {ec_connect, th_echo_msg, th_count_close};

START_TEST(echo_many_clients)
{
  gev_options opt = {.num_loops = 2};
  th_server *srv;
  ec_client cl[EC_THREADS];
  pthread_t th[EC_THREADS];
  unsigned seed = 12345;
  size_t total = 0;

  th_reset_counters();
  srv = th_start(&ec_handler, &opt);
  for (int t = 0; t < EC_THREADS; t++) {
    cl[t].port = srv->port;
    cl[t].n = EC_CLIENTS / EC_THREADS;
    cl[t].err[0] = '\0';
    cl[t].st = calloc((size_t)cl[t].n, sizeof(ec_stream));
    ck_assert_ptr_nonnull(cl[t].st);
    for (int i = 0; i < cl[t].n; i++) {
      ec_stream *s = &cl[t].st[i];
      s->fd = -1;
      s->total = 1 + (size_t)rand_r(&seed) % MIB;
      total += s->total;
      pat_init(&s->tx, (uint32_t)(t * 1000 + i + 1));
      pat_init(&s->rx, (uint32_t)(t * 1000 + i + 1));
    }
  }
  for (int t = 0; t < EC_THREADS; t++)
    ck_assert_int_eq(pthread_create(&th[t], NULL, ec_client_main, &cl[t]), 0);
  for (int t = 0; t < EC_THREADS; t++)
    th_join(th[t], 90);
  for (int t = 0; t < EC_THREADS; t++) {
    ck_assert_msg(cl[t].err[0] == '\0', "client thread %d: %s", t, cl[t].err);
    for (int i = 0; i < cl[t].n; i++)
      ck_assert_uint_eq(cl[t].st[i].recvd, cl[t].st[i].total);
    free(cl[t].st);
  }
  ck_assert_msg(total > 50 * MIB, "sizes should be random up to 1 MiB");
  ck_assert_msg(th_wait_int(&th_closes, EC_CLIENTS, 10000),
                "on_close ran %d times, want %d", th_ld(&th_closes),
                EC_CLIENTS);
  ck_assert_int_eq(th_ld(&th_connects), EC_CLIENTS);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), EC_CLIENTS);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* ---- 2. a 64 MiB stream through echo ----------------------------------- */

typedef struct stream_writer {
  int fd;
  size_t total;
  uint32_t seed;
  bool shut; /* shutdown(SHUT_WR) after the last byte */
  bool ok;
} stream_writer;

static void *stream_writer_main(void *arg)
{
  stream_writer *w = arg;
  unsigned char *buf = malloc(64 * 1024);
  pat p;

  w->ok = buf != NULL;
  pat_init(&p, w->seed);
  for (size_t off = 0; w->ok && off < w->total;) {
    size_t m = w->total - off < 64 * 1024 ? w->total - off : 64 * 1024;
    pat_fill(&p, buf, m);
    w->ok = th_write_all(w->fd, buf, m);
    off += m;
  }
  if (w->ok && w->shut)
    w->ok = shutdown(w->fd, SHUT_WR) == 0;
  free(buf);
  return NULL;
}

/* Reads exactly `total` pattern bytes; "" or a description of the fault. */
static const char *read_pattern(int fd, size_t total, uint32_t seed)
{
  static _Thread_local char msg[128];
  unsigned char *buf = malloc(64 * 1024);
  size_t got = 0;
  pat p;

  ck_assert_ptr_nonnull(buf);
  pat_init(&p, seed);
  msg[0] = '\0';
  while (got < total) {
    size_t want = total - got < 64 * 1024 ? total - got : 64 * 1024;
    ssize_t k = recv(fd, buf, want, 0);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      snprintf(msg, sizeof(msg), "%s after %zu of %zu bytes",
               k == 0 ? "EOF" : strerror(errno), got, total);
      break;
    }
    size_t bad = pat_check(&p, buf, (size_t)k);
    if (bad != (size_t)k) {
      snprintf(msg, sizeof(msg), "byte %zu differs", got + bad);
      break;
    }
    got += (size_t)k;
  }
  free(buf);
  return msg;
}

START_TEST(echo_64mib_stream)
{
  gev_options opt = {.num_loops = 2};
  stream_writer w = {.total = 64 * MIB, .seed = 77, .shut = true};
  th_server *srv;
  pthread_t t;
  const char *err;
  int fd;

  th_reset_counters();
  srv = th_start(&th_echo_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  w.fd = fd;
  ck_assert_int_eq(pthread_create(&t, NULL, stream_writer_main, &w), 0);
  err = read_pattern(fd, w.total, w.seed);
  th_join(t, 60);
  ck_assert_msg(err[0] == '\0', "64 MiB echo: %s", err);
  ck_assert(w.ok);
  /* The writer sent FIN: the server flushes and closes. */
  ck_assert(th_wait_eof(fd, 10000));
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_connects), 1);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* ---- 3. a line protocol that keeps partial frames in `in` -------------- */

typedef struct lp_ctx {
  size_t retained;        /* bytes left in `in` at the end of the last call */
  unsigned char head[64]; /* their first bytes */
  size_t consumed;
} lp_ctx;

static int lp_partial_seen;  /* calls that found retained bytes again */
static size_t lp_seen_total; /* consumed + held, as the handler saw it */

static void lp_connect(gev_conn *c)
{
  lp_ctx *x = calloc(1, sizeof(*x));
  if (!x)
    th_inc(&th_violations);
  gev_conn_set_context(c, x);
  th_inc(&th_connects);
}

static void lp_close(gev_conn *c)
{
  free(gev_conn_context(c));
  gev_conn_set_context(c, NULL);
  th_inc(&th_closes);
}

/* Replies to each whole line with the line reversed. */
static void lp_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  lp_ctx *x = gev_conn_context(c);
  size_t len = ringbuffer_len(in);
  struct iovec seg[2];
  ssize_t pos;

  if (!x)
    return;
  if (gev_conn_read_buffer_len(c) != len)
    th_inc(&th_violations);
  if (x->retained) {
    size_t hl = x->retained < sizeof(x->head) ? x->retained : sizeof(x->head);
    unsigned char now[64];
    if (len <= x->retained) {
      th_inc(&th_violations); /* called without new bytes */
    } else {
      ringbuffer_peek(in, hl, seg);
      memcpy(now, seg[0].iov_base, seg[0].iov_len);
      if (seg[1].iov_len)
        memcpy(now + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
      if (memcmp(now, x->head, hl) != 0)
        th_inc(&th_violations); /* the held bytes changed */
      th_inc(&lp_partial_seen);
    }
  }
  while ((pos = ringbuffer_find(in, "\n", 1)) >= 0) {
    char *line = ringbuffer_linearize(in, (size_t)pos + 1);
    char rev[512];
    if (!line || pos >= (ssize_t)sizeof(rev)) {
      th_inc(&th_violations);
      ringbuffer_retrieve_all(in);
      break;
    }
    for (ssize_t i = 0; i < pos; i++)
      rev[i] = line[pos - 1 - i];
    rev[pos] = '\n';
    if (ringbuffer_write(out, rev, (size_t)pos + 1) != 0)
      th_inc(&th_violations);
    ringbuffer_retrieve(in, (size_t)pos + 1);
    x->consumed += (size_t)pos + 1;
  }
  if (gev_conn_write_buffer_len(c) != ringbuffer_len(out))
    th_inc(&th_violations);
  x->retained = ringbuffer_len(in);
  if (x->retained) {
    size_t hl = x->retained < sizeof(x->head) ? x->retained : sizeof(x->head);
    ringbuffer_peek(in, hl, seg);
    memcpy(x->head, seg[0].iov_base, seg[0].iov_len);
    if (seg[1].iov_len)
      memcpy(x->head + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
  }
  __atomic_store_n(&lp_seen_total, x->consumed + x->retained, __ATOMIC_SEQ_CST);
}

static const gev_handler lp_handler = {
    .on_connect = lp_connect,
    .on_message = lp_msg,
    .on_close = lp_close,
};

typedef struct seen_arg {
  size_t want;
} seen_arg;

static bool lp_seen_reached(void *arg)
{
  return __atomic_load_n(&lp_seen_total, __ATOMIC_SEQ_CST) >=
         ((seen_arg *)arg)->want;
}

START_TEST(line_protocol_partial_frames)
{
  enum { LINES = 400 };
  gev_options opt = {.num_loops = 2};
  unsigned seed = 4242;
  size_t cap = LINES * 300, len = 0, rlen = 0, off = 0;
  char *stream = malloc(cap), *expect = malloc(cap), *reply = malloc(cap);
  th_server *srv;
  int fd, waits = 0, writes = 0;

  ck_assert(stream && expect && reply);
  th_reset_counters();
  lp_partial_seen = 0;
  lp_seen_total = 0;
  for (int i = 0; i < LINES; i++) {
    size_t n = (size_t)rand_r(&seed) % 200; /* empty lines too */
    for (size_t k = 0; k < n; k++)
      stream[len + k] = (char)('!' + rand_r(&seed) % 90);
    for (size_t k = 0; k < n; k++)
      expect[rlen + k] = stream[len + n - 1 - k];
    stream[len + n] = expect[rlen + n] = '\n';
    len += n + 1;
    rlen += n + 1;
  }
  srv = th_start(&lp_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  while (off < len) {
    /* Random split points: a third of the writes are a single byte. */
    size_t n = rand_r(&seed) % 3 == 0 ? 1 : 1 + (size_t)rand_r(&seed) % 97;
    if (n > len - off)
      n = len - off;
    ck_assert(th_write_all(fd, stream + off, n));
    off += n;
    writes++;
    /* Now and then, when the write ended inside a line, wait until the
     * handler has seen it: its next call must show the partial line. */
    if (stream[off - 1] != '\n' && writes % 8 == 0) {
      seen_arg a = {off};
      ck_assert_msg(th_wait_until(lp_seen_reached, &a, 10000),
                    "handler never saw byte %zu", off);
      waits++;
    }
  }
  ck_assert(th_read_exact(fd, reply, rlen));
  ck_assert_msg(memcmp(reply, expect, rlen) == 0, "reply lines differ");
  ck_assert_int_gt(waits, 10);
  /* Every wait left a partial line that the next call saw again. */
  ck_assert_int_ge(th_ld(&lp_partial_seen), waits);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  free(stream);
  free(expect);
  free(reply);
}
END_TEST

/* ---- 4. sends from other threads --------------------------------------- */

#define XS_CONNS 100

static struct {
  pthread_mutex_t mu;
  gev_conn *conns[XS_CONNS * 2];
  int n;
} xs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void xs_reset(void)
{
  pthread_mutex_lock(&xs.mu);
  xs.n = 0;
  pthread_mutex_unlock(&xs.mu);
}

static void xs_connect(gev_conn *c)
{
  int small = 4096;

  /* Small kernel buffers, so outputs reach max_buffer quickly. */
  setsockopt(gev_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  gev_conn_ref(c); /* kept past on_close: the sender thread uses it */
  pthread_mutex_lock(&xs.mu);
  if (xs.n < (int)(sizeof(xs.conns) / sizeof(xs.conns[0])))
    xs.conns[xs.n++] = c;
  else
    th_inc(&th_violations);
  pthread_mutex_unlock(&xs.mu);
  th_inc(&th_connects);
}

static void xs_drop_input(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  ringbuffer_retrieve_all(in);
}

static const gev_handler xs_handler = {
    .on_connect = xs_connect,
    .on_message = xs_drop_input,
    .on_close = th_count_close,
};

typedef struct xs_sender {
  int stop;
  long ok, notconn, nobufs, other, rounds;
  int other_val;
} xs_sender;

static void *xs_sender_main(void *arg)
{
  xs_sender *s = arg;
  unsigned seed = 99;
  char buf[4096];
  gev_conn *conns[XS_CONNS * 2];
  int n;

  memset(buf, 'x', sizeof(buf));
  pthread_mutex_lock(&xs.mu);
  n = xs.n;
  memcpy(conns, xs.conns, sizeof(conns[0]) * (size_t)n);
  pthread_mutex_unlock(&xs.mu);
  while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
    for (int i = 0; i < n; i++) {
      int r = gev_conn_send(conns[i], buf, 1 + (size_t)rand_r(&seed) % 4096);
      if (r == 0)
        s->ok++;
      else if (r == -ENOTCONN)
        s->notconn++;
      else if (r == -ENOBUFS)
        __atomic_fetch_add(&s->nobufs, 1, __ATOMIC_SEQ_CST);
      else {
        s->other++;
        s->other_val = r;
      }
    }
    __atomic_fetch_add(&s->rounds, 1, __ATOMIC_SEQ_CST);
  }
  return NULL;
}

/* Waits (bounded) until the sender has completed `extra` more rounds. */
static void wait_rounds(xs_sender *s, long extra)
{
  long goal = __atomic_load_n(&s->rounds, __ATOMIC_SEQ_CST) + extra;
  uint64_t end = th_now_ms() + 20000;

  while (__atomic_load_n(&s->rounds, __ATOMIC_SEQ_CST) < goal &&
         th_now_ms() < end)
    usleep(1000);
  ck_assert_msg(__atomic_load_n(&s->rounds, __ATOMIC_SEQ_CST) >= goal,
                "sender thread stalled");
}

static bool sender_saw_nobufs(void *arg)
{
  return __atomic_load_n(&((xs_sender *)arg)->nobufs, __ATOMIC_SEQ_CST) > 0;
}

START_TEST(send_from_thread_while_closing)
{
  gev_options opt = {.num_loops = 2, .max_buffer = 64 * 1024};
  xs_sender snd = {0};
  int fds[XS_CONNS], order[XS_CONNS];
  unsigned seed = 7;
  th_server *srv;
  pthread_t t;

  th_reset_counters();
  xs_reset();
  srv = th_start(&xs_handler, &opt);
  for (int i = 0; i < XS_CONNS; i++) {
    int small = 4096;
    fds[i] = th_connect(srv->port);
    ck_assert_int_ge(fds[i], 0);
    setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    order[i] = i;
  }
  ck_assert(th_wait_int(&th_connects, XS_CONNS, 10000));
  ck_assert_int_eq(pthread_create(&t, NULL, xs_sender_main, &snd), 0);
  ck_assert_msg(th_wait_until(sender_saw_nobufs, &snd, 20000),
                "outputs never reached max_buffer");
  for (int i = XS_CONNS - 1; i > 0; i--) {
    int j = rand_r(&seed) % (i + 1), tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  /* The clients never read: outputs fill up to max_buffer (-ENOBUFS), and
   * they close in random order, a third of them with a reset. */
  for (int i = 0; i < XS_CONNS; i++) {
    int fd = fds[order[i]];
    if (i % 3 == 0)
      set_rst_on_close(fd);
    else if (i % 3 == 1)
      shutdown(fd, SHUT_RDWR);
    close(fd);
    if (rand_r(&seed) % 4 == 0)
      usleep((useconds_t)(rand_r(&seed) % 2000));
  }
  ck_assert_msg(th_wait_int(&th_closes, XS_CONNS, 20000),
                "on_close ran %d of %d times", th_ld(&th_closes), XS_CONNS);
  wait_rounds(&snd, 3); /* sends to connections known to be closed */
  __atomic_store_n(&snd.stop, 1, __ATOMIC_SEQ_CST);
  th_join(t, 20);
  ck_assert_msg(snd.other == 0, "gev_conn_send returned %d (%s)", snd.other_val,
                gev_strerror(snd.other_val));
  ck_assert_int_gt(snd.ok, 0);
  ck_assert_int_gt(snd.notconn, 0);
  ck_assert_int_gt(snd.nobufs, 0);
  /* Closed for good: every later send and close says so. */
  for (int i = 0; i < 2; i++)
    th_run_in_loop(gev_server_worker_loop(srv->s, i), th_noop, NULL);
  for (int i = 0; i < xs.n; i++) {
    gev_conn *c = xs.conns[i];
    ck_assert_int_eq(gev_conn_send(c, "x", 1), -ENOTCONN);
    ck_assert_int_eq(gev_conn_close(c), -ENOTCONN);
    ck_assert_int_eq(gev_conn_shutdown_write(c), -ENOTCONN);
    ck_assert(!gev_conn_connected(c));
    ck_assert_int_eq(gev_conn_fd(c), -1);
  }
  /* Half the references go before the server is freed, half after. */
  for (int i = 0; i < xs.n / 2; i++)
    gev_conn_unref(xs.conns[i]);
  th_stop(srv);
  for (int i = xs.n / 2; i < xs.n; i++)
    gev_conn_unref(xs.conns[i]);
  ck_assert_int_eq(th_ld(&th_connects), XS_CONNS);
  ck_assert_int_eq(th_ld(&th_closes), XS_CONNS);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

static void *start_main(void *arg)
{
  return (void *)(intptr_t)gev_server_start(arg);
}

/* Sends race with the server stopping: they succeed or fail cleanly, and
 * the connections' references are dropped afterwards. The sender stops
 * before gev_server_free (sending concurrently with free is a use after
 * free of the server by the caller). */
START_TEST(send_from_thread_during_stop)
{
  gev_options opt = {
      .num_loops = 2, .max_buffer = 64 * 1024, .address = "127.0.0.1:0"};
  xs_sender snd = {0};
  gev_server *s;
  pthread_t st, t;
  int fds[20];

  th_reset_counters();
  xs_reset();
  ck_assert_int_eq(gev_server_new(&s, &xs_handler, &opt), 0);
  ck_assert_int_eq(pthread_create(&st, NULL, start_main, s), 0);
  for (int i = 0; i < 20; i++) {
    fds[i] = th_connect(gev_server_port(s));
    ck_assert_int_ge(fds[i], 0);
  }
  ck_assert(th_wait_int(&th_connects, 20, 10000));
  ck_assert_int_eq(pthread_create(&t, NULL, xs_sender_main, &snd), 0);
  wait_rounds(&snd, 5);
  gev_server_stop(s); /* the sender is still sending */
  ck_assert_int_eq((intptr_t)th_join(st, 20), 0);
  wait_rounds(&snd, 3); /* and goes on sending to the stopped server */
  __atomic_store_n(&snd.stop, 1, __ATOMIC_SEQ_CST);
  th_join(t, 20);
  ck_assert_msg(snd.other == 0, "gev_conn_send returned %d (%s)", snd.other_val,
                gev_strerror(snd.other_val));
  ck_assert_int_gt(snd.ok, 0);
  ck_assert_int_gt(snd.notconn, 0);
  ck_assert_int_eq(th_ld(&th_closes), 20);
  for (int i = 0; i < xs.n; i++) {
    ck_assert_int_eq(gev_conn_send(xs.conns[i], "x", 1), -ENOTCONN);
    gev_conn_unref(xs.conns[i]);
  }
  gev_server_free(s);
  for (int i = 0; i < 20; i++)
    close(fds[i]);
}
END_TEST

/* Records from several threads to one reading client: each record arrives
 * whole, intact, and in its sender's order; refused sends never arrive. */
#define FI_THREADS 3
#define FI_RECORDS 3000

typedef struct fi_sender {
  gev_conn *c;
  int id;
  long nobufs;
  int fail;
} fi_sender;

static size_t fi_payload_len(int id, uint32_t seq)
{
  return 1 + (seq * 7919u + (uint32_t)id * 104729u) % 1500u;
}

static void *fi_sender_main(void *arg)
{
  fi_sender *s = arg;
  unsigned char rec[8 + 1500];
  uint64_t deadline = th_now_ms() + 60000;

  for (uint32_t seq = 0; seq < FI_RECORDS;) {
    size_t n = fi_payload_len(s->id, seq);
    pat p;
    rec[0] = (unsigned char)s->id;
    memcpy(rec + 1, &seq, 4);
    rec[5] = (unsigned char)(n >> 8);
    rec[6] = (unsigned char)n;
    rec[7] = 0xA5;
    pat_init(&p, (uint32_t)s->id * 1000003u + seq);
    pat_fill(&p, rec + 8, n);
    int r = gev_conn_send(s->c, rec, 8 + n);
    if (r == 0) {
      seq++;
    } else if (r == -ENOBUFS) {
      s->nobufs++;
      if (th_now_ms() > deadline) {
        s->fail = -ETIMEDOUT;
        return NULL;
      }
      usleep(50);
    } else {
      s->fail = r;
      return NULL;
    }
  }
  return NULL;
}

START_TEST(send_from_threads_fifo)
{
  gev_options opt = {.num_loops = 2, .max_buffer = 32 * 1024};
  fi_sender snd[FI_THREADS];
  pthread_t t[FI_THREADS];
  uint32_t next[FI_THREADS] = {0};
  unsigned char hdr[8], body[1500];
  long total = 0;
  th_server *srv;
  int fd;

  th_reset_counters();
  xs_reset();
  srv = th_start(&xs_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 10000));
  for (int i = 0; i < FI_THREADS; i++) {
    snd[i] = (fi_sender){.c = xs.conns[0], .id = i};
    ck_assert_int_eq(pthread_create(&t[i], NULL, fi_sender_main, &snd[i]), 0);
  }
  while (total < (long)FI_THREADS * FI_RECORDS) {
    uint32_t seq;
    size_t n;
    pat p;
    ck_assert_msg(th_read_exact(fd, hdr, 8), "stream ended after %ld records",
                  total);
    ck_assert_int_lt(hdr[0], FI_THREADS);
    ck_assert_int_eq(hdr[7], 0xA5);
    memcpy(&seq, hdr + 1, 4);
    n = ((size_t)hdr[5] << 8) | hdr[6];
    ck_assert_msg(seq == next[hdr[0]], "thread %d: record %u, expected %u",
                  hdr[0], seq, next[hdr[0]]);
    ck_assert_uint_eq(n, fi_payload_len(hdr[0], seq));
    ck_assert(th_read_exact(fd, body, n));
    pat_init(&p, (uint32_t)hdr[0] * 1000003u + seq);
    ck_assert_msg(pat_check(&p, body, n) == n, "record %d/%u corrupted", hdr[0],
                  seq);
    next[hdr[0]]++;
    total++;
  }
  for (int i = 0; i < FI_THREADS; i++) {
    th_join(t[i], 30);
    ck_assert_msg(snd[i].fail == 0, "sender %d: %s", i,
                  gev_strerror(snd[i].fail));
  }
  /* Nothing beyond the accepted records. */
  {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 100), 0);
  }
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  gev_conn_unref(xs.conns[0]);
  th_stop(srv);
}
END_TEST

/* ---- 5. callback order, threads and idempotence ------------------------ */

typedef struct ord_ctx {
  pthread_t tid;
  gev_loop *loop;
  int stage; /* 1 connected, 2 closed */
  int msgs;
} ord_ctx;

#define ORD_MAX 256
static ord_ctx *ord_all[ORD_MAX];
static int ord_n;

static void ord_check(gev_conn *c, ord_ctx *x)
{
  if (!x || !pthread_equal(x->tid, pthread_self()) ||
      !gev_loop_in_thread(gev_conn_loop(c)) || x->loop != gev_conn_loop(c))
    th_inc(&th_violations);
}

static void ord_connect(gev_conn *c)
{
  ord_ctx *x = calloc(1, sizeof(*x));
  int i = __atomic_fetch_add(&ord_n, 1, __ATOMIC_SEQ_CST);

  if (!x || i >= ORD_MAX || gev_conn_context(c) != NULL) {
    th_inc(&th_violations);
    free(x);
    return;
  }
  x->tid = pthread_self();
  x->loop = gev_conn_loop(c);
  x->stage = 1;
  ord_all[i] = x;
  if (!gev_loop_in_thread(gev_conn_loop(c)) || !gev_conn_connected(c) ||
      gev_conn_fd(c) < 0)
    th_inc(&th_violations);
  gev_conn_set_context(c, x);
  th_inc(&th_connects);
}

static void ord_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ord_ctx *x = gev_conn_context(c);

  ord_check(c, x);
  if (x && x->stage != 1)
    th_inc(&th_violations);
  if (x)
    x->msgs++;
  th_echo_msg(c, in, out);
}

static void ord_close(gev_conn *c)
{
  ord_ctx *x = gev_conn_context(c);

  ord_check(c, x);
  if (x && x->stage != 1)
    th_inc(&th_violations); /* a second on_close, or one without on_connect */
  if (x)
    x->stage = 2;
  if (gev_conn_send(c, "x", 1) != -ENOTCONN)
    th_inc(&th_violations);
  th_inc(&th_closes);
}

static const gev_handler ord_handler = {
    .on_connect = ord_connect,
    .on_message = ord_msg,
    .on_close = ord_close,
};

static bool all_closed(void *server)
{
  int n = th_ld(&th_connects);
  return n >= 30 && th_ld(&th_closes) == n &&
         gev_server_conn_count(server) == 0;
}

START_TEST(callback_order_and_thread)
{
  gev_options opt = {.num_loops = 2};
  th_server *srv;
  int accepted;

  th_reset_counters();
  ord_n = 0;
  srv = th_start(&ord_handler, &opt);
  for (int i = 0; i < 60; i++) {
    int fd = th_connect(srv->port);
    ck_assert_int_ge(fd, 0);
    switch (i % 4) {
    case 0: /* a few round trips, then a normal close */
      for (int k = 0; k < 3; k++)
        ck_assert(th_echo_roundtrip(fd, 100 + (size_t)k * 1000, (uint32_t)i));
      break;
    case 1: /* reset at once, maybe before the server accepted */ break;
    case 2: /* reset right after on_connect ran (the echo proves it) */
      ck_assert(th_echo_roundtrip(fd, 1, (uint32_t)i));
      break;
    case 3: /* data in flight when the reset comes */
      ck_assert(th_write_all(fd, "hello", 5));
      break;
    }
    if (i % 4 != 0)
      set_rst_on_close(fd);
    close(fd);
  }
  /* Every client is gone: the resets and FINs close every accepted
   * connection without help from gev_server_stop. */
  ck_assert_msg(th_wait_until(all_closed, srv->s, 10000),
                "%d connects, %d closes", th_ld(&th_connects),
                th_ld(&th_closes));
  th_stop(srv);
  accepted = th_ld(&th_connects);
  ck_assert_int_ge(accepted, 30); /* cases 0 and 2 are always accepted */
  ck_assert_int_eq(th_ld(&th_closes), accepted);
  ck_assert_int_eq(th_ld(&ord_n), accepted);
  for (int i = 0; i < accepted; i++) {
    ck_assert_int_eq(ord_all[i]->stage, 2);
    free(ord_all[i]);
  }
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* gev_conn_close twice: 0, then -ENOTCONN; afterwards, with a reference
 * held, sends fail with -ENOTCONN. From the loop thread and from outside. */
static int ci_results[8];

static void ci_connect(gev_conn *c)
{
  gev_conn_ref(c);
  pthread_mutex_lock(&xs.mu);
  xs.conns[xs.n++] = c;
  pthread_mutex_unlock(&xs.mu);
  th_inc(&th_connects);
}

static void ci_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ringbuffer_retrieve_all(in);
  if (ringbuffer_write(out, "bye\n", 4) != 0)
    th_inc(&th_violations);
  ci_results[0] = gev_conn_close(c);
  ci_results[1] = gev_conn_close(c);
  ci_results[2] = gev_conn_send(c, "late", 4);
  ci_results[3] = gev_conn_shutdown_write(c);
  ci_results[4] = gev_conn_connected(c);
  th_inc(&ci_results[5]);
}

static const gev_handler ci_handler = {
    .on_connect = ci_connect,
    .on_message = ci_msg,
    .on_close = th_count_close,
};

START_TEST(close_idempotent)
{
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  char buf[4];
  int a, b;

  th_reset_counters();
  xs_reset();
  memset(ci_results, 0x55, sizeof(ci_results));
  ci_results[5] = 0;
  srv = th_start(&ci_handler, &opt);

  /* Inside on_message. */
  a = th_connect(srv->port);
  ck_assert_int_ge(a, 0);
  ck_assert(th_write_all(a, "x", 1));
  ck_assert(th_read_exact(a, buf, 4));
  ck_assert(memcmp(buf, "bye\n", 4) == 0);
  ck_assert(th_wait_eof(a, 10000));
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(ci_results[0], 0);
  ck_assert_int_eq(ci_results[1], -ENOTCONN);
  ck_assert_int_eq(ci_results[2], -ENOTCONN);
  ck_assert_int_eq(ci_results[3], -ENOTCONN);
  ck_assert_int_eq(ci_results[4], 0);
  ck_assert_int_eq(ci_results[5], 1);
  ck_assert_int_eq(gev_conn_send(xs.conns[0], "x", 1), -ENOTCONN);
  ck_assert_int_eq(gev_conn_close(xs.conns[0]), -ENOTCONN);

  /* From another thread, holding a reference. */
  b = th_connect(srv->port);
  ck_assert_int_ge(b, 0);
  ck_assert(th_wait_int(&th_connects, 2, 10000));
  ck_assert_int_eq(gev_conn_send(xs.conns[1], "hi", 2), 0);
  ck_assert_int_eq(gev_conn_close(xs.conns[1]), 0);
  ck_assert_int_eq(gev_conn_close(xs.conns[1]), -ENOTCONN);
  ck_assert_int_eq(gev_conn_send(xs.conns[1], "x", 1), -ENOTCONN);
  ck_assert_int_eq(gev_conn_shutdown_write(xs.conns[1]), -ENOTCONN);
  ck_assert(th_read_exact(b, buf, 2));
  ck_assert(memcmp(buf, "hi", 2) == 0);
  ck_assert(th_wait_eof(b, 10000));
  ck_assert(th_wait_int(&th_closes, 2, 10000));
  ck_assert_int_eq(gev_conn_send(xs.conns[1], "x", 1), -ENOTCONN);
  /* on_close has returned once a task posted now has run. */
  th_run_in_loop(gev_conn_loop(xs.conns[1]), th_noop, NULL);
  ck_assert_int_eq(gev_conn_fd(xs.conns[1]), -1);
  close(a);
  close(b);
  ck_assert_int_eq(gev_conn_send(NULL, "x", 1), -EINVAL);
  ck_assert_int_eq(gev_conn_send(xs.conns[1], NULL, 1), -EINVAL);
  ck_assert_int_eq(gev_conn_close(NULL), -EINVAL);
  ck_assert_int_eq(gev_conn_shutdown_write(NULL), -EINVAL);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), 2);
  gev_conn_unref(xs.conns[0]);
  gev_conn_unref(xs.conns[1]);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* ---- 6. peer EOF -------------------------------------------------------- */

/* An echo whose socket takes little: the replies wait in the server's
 * output, where a close that does not flush them would lose them. */
static void pe_connect(gev_conn *c)
{
  int small = 4096;

  setsockopt(gev_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  th_count_connect(c);
}

static const gev_handler pe_handler = {pe_connect, th_echo_msg, th_count_close};

/* Sends `total` bytes and FIN, then (or meanwhile, when `concurrent`)
 * reads the echo: all of it, then EOF. Both kernel buffers on the way back
 * are small: when not concurrent, the FIN arrives while nearly all the
 * replies wait in the server's output; when concurrent with a small cap,
 * the output is full often enough that a server that did not stop reading
 * would fill its input and close. */
static void peer_eof_case(size_t max_buffer, size_t total, bool concurrent)
{
  gev_options opt = {.num_loops = 2, .max_buffer = max_buffer};
  int small = 65536;
  stream_writer w = {.total = total, .seed = 5, .shut = true};
  th_server *srv;
  const char *err;
  pthread_t t;
  int fd;

  th_reset_counters();
  srv = th_start(&pe_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  w.fd = fd;
  ck_assert_int_eq(pthread_create(&t, NULL, stream_writer_main, &w), 0);
  if (!concurrent)
    th_join(t, 30); /* all sent and FIN before reading a byte */
  err = read_pattern(fd, total, w.seed);
  if (concurrent)
    th_join(t, 30);
  ck_assert(w.ok);
  ck_assert_msg(err[0] == '\0', "after peer EOF: %s", err);
  ck_assert_msg(th_wait_eof(fd, 10000), "no EOF after the replies");
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  close(fd);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_connects), 1);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}

START_TEST(peer_eof_flushes_replies)
{
  /* The server holds the replies (default cap): FIN arrives while they are
   * queued. */
  peer_eof_case(0, 2 * MIB, false);
}
END_TEST

START_TEST(peer_eof_with_backpressure)
{
  /* A small cap: the server keeps stopping to read, held input is shown
   * again after the output drains, and the FIN waits behind it. */
  peer_eof_case(16 * 1024, 4 * MIB, true);
}
END_TEST

/* ---- 7. close inside on_message; shutdown_write ------------------------ */

#define CM_REPLY (3 * MIB)

static int cm_close_ret[2];

static void cm_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  unsigned char *buf;
  pat p;

  if (ringbuffer_find(in, "\n", 1) < 0)
    return;
  ringbuffer_retrieve_all(in);
  buf = malloc(CM_REPLY);
  if (!buf) {
    th_inc(&th_violations);
    return;
  }
  pat_init(&p, 31);
  pat_fill(&p, buf, CM_REPLY);
  if (ringbuffer_write(out, buf, CM_REPLY) != 0)
    th_inc(&th_violations);
  free(buf);
  cm_close_ret[0] = gev_conn_close(c);
  cm_close_ret[1] = gev_conn_close(c);
}

static const gev_handler cm_handler = {
    .on_connect = th_count_connect,
    .on_message = cm_msg,
    .on_close = th_count_close,
};

START_TEST(close_in_on_message_flushes)
{
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  const char *err;
  int fd;

  th_reset_counters();
  srv = th_start(&cm_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "bye\n", 4));
  err = read_pattern(fd, CM_REPLY, 31);
  ck_assert_msg(err[0] == '\0', "reply before close: %s", err);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(cm_close_ret[0], 0);
  ck_assert_int_eq(cm_close_ret[1], -ENOTCONN);
  close(fd);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* Echo; a message starting with 'S' also shuts the write side down after
 * its echo. Bytes that arrive afterwards are counted. */
static int sw_ret[3];
static bool sw_shut;
static int sw_after; /* bytes received after the shutdown */
static gev_conn *sw_conn;

static void sw_connect(gev_conn *c)
{
  sw_conn = c;
  th_inc(&th_connects);
}

static void sw_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  struct iovec seg[2];

  if (!sw_shut) {
    ringbuffer_peek(in, 1, seg);
    if (seg[0].iov_len && *(char *)seg[0].iov_base == 'S') {
      th_echo_msg(c, in, out);
      sw_ret[0] = gev_conn_shutdown_write(c);
      sw_shut = true;
      sw_ret[1] = gev_conn_shutdown_write(c);
      sw_ret[2] = gev_conn_send(c, "x", 1);
      return;
    }
    th_echo_msg(c, in, out);
    return;
  }
  /* Shut down: the read side still works; echoing now cannot be sent. */
  __atomic_fetch_add(&sw_after, (int)ringbuffer_len(in), __ATOMIC_SEQ_CST);
  th_echo_msg(c, in, out);
}

static const gev_handler sw_handler = {
    .on_connect = sw_connect,
    .on_message = sw_msg,
    .on_close = th_count_close,
};

static int sw_closes_seen;
static void sw_probe(void *arg)
{
  (void)arg;
  sw_closes_seen = th_ld(&th_closes);
}

START_TEST(shutdown_write_half_close)
{
  gev_options opt = {.num_loops = 1};
  char msg[4096], buf[4096];
  th_server *srv;
  int fd;

  th_reset_counters();
  sw_shut = false;
  sw_after = 0;
  srv = th_start(&sw_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 1000, 1));
  th_fill(msg, sizeof(msg), 3);
  msg[0] = 'S';
  ck_assert(th_write_all(fd, msg, sizeof(msg)));
  ck_assert(th_read_exact(fd, buf, sizeof(buf)));
  ck_assert(memcmp(msg, buf, sizeof(buf)) == 0);
  ck_assert_msg(th_wait_eof(fd, 10000), "no FIN after shutdown_write");
  ck_assert_int_eq(sw_ret[0], 0);
  ck_assert_int_eq(sw_ret[1], -ENOTCONN);
  ck_assert_int_eq(sw_ret[2], -ENOTCONN);
  /* The client can still send, and the server still reads. */
  ck_assert(th_write_all(fd, msg + 1, 1000));
  ck_assert_msg(th_wait_int(&sw_after, 1000, 10000),
                "server read %d of 1000 bytes after shutdown_write",
                th_ld(&sw_after));
  /* Runs in the connection's loop after the pass that read those bytes. */
  th_run_in_loop(gev_conn_loop(sw_conn), sw_probe, NULL);
  ck_assert_msg(sw_closes_seen == 0, "on_close ran before the client closed");
  ck_assert_int_eq(th_ld(&th_closes), 0);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* shutdown_write from another thread: queued sends go out first. */
START_TEST(shutdown_write_from_thread)
{
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  const char *err;
  unsigned char *big = malloc(MIB);
  pat p;
  int fd;

  ck_assert_ptr_nonnull(big);
  th_reset_counters();
  xs_reset();
  srv = th_start(&ci_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 10000));
  pat_init(&p, 8);
  pat_fill(&p, big, MIB);
  ck_assert_int_eq(gev_conn_send(xs.conns[0], big, MIB), 0);
  ck_assert_int_eq(gev_conn_shutdown_write(xs.conns[0]), 0);
  ck_assert_int_eq(gev_conn_shutdown_write(xs.conns[0]), -ENOTCONN);
  ck_assert_int_eq(gev_conn_send(xs.conns[0], "x", 1), -ENOTCONN);
  ck_assert(gev_conn_connected(xs.conns[0]));
  err = read_pattern(fd, MIB, 8);
  ck_assert_msg(err[0] == '\0', "%s", err);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert_int_eq(th_ld(&th_closes), 0);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  gev_conn_unref(xs.conns[0]);
  free(big);
}
END_TEST

/* ---- max_buffer caps the input too -------------------------------------- */

static size_t mb_max_in;

static void mb_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t n = ringbuffer_len(in);
  (void)c;
  (void)out;
  if (n > mb_max_in)
    mb_max_in = n; /* one loop thread: no race */
  /* consumes nothing: waits for a '\n' that never comes */
}

static const gev_handler mb_handler = {
    .on_connect = th_count_connect,
    .on_message = mb_msg,
    .on_close = th_count_close,
};

START_TEST(max_buffer_caps_input)
{
  gev_options opt = {.num_loops = 1, .max_buffer = 4096};
  char *junk = malloc(256 * 1024);
  th_server *srv;
  int fd;

  ck_assert_ptr_nonnull(junk);
  memset(junk, 'a', 256 * 1024);
  th_reset_counters();
  mb_max_in = 0;
  srv = th_start(&mb_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  /* The server closes once its input is full: the write may fail. */
  th_write_all(fd, junk, 256 * 1024);
  ck_assert_msg(th_wait_eof(fd, 10000), "frame larger than max_buffer kept");
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  close(fd);
  th_stop(srv);
  ck_assert_msg(mb_max_in <= 4096, "on_message saw %zu bytes, cap 4096",
                mb_max_in);
  ck_assert_uint_gt(mb_max_in, 0);
  free(junk);
}
END_TEST

/* ---- held input is shown again once the output drains ------------------ */

/* Each 1000-byte record is answered with 16 copies of itself, but only when
 * the whole reply fits: a handler that waits for output room, leaving the
 * rest of its input in `in`. */
#define AMP_REC 1000
#define AMP_X 16

static void amp_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  static _Thread_local char rep[AMP_REC * AMP_X];

  (void)c;
  while (ringbuffer_len(in) >= AMP_REC) {
    size_t lim = ringbuffer_limit(out);
    if (lim - ringbuffer_len(out) < sizeof(rep))
      break; /* no room: wait until the output drains */
    char *r = ringbuffer_linearize(in, AMP_REC);
    for (int i = 0; i < AMP_X; i++)
      memcpy(rep + i * AMP_REC, r, AMP_REC);
    if (ringbuffer_write(out, rep, sizeof(rep)) != 0)
      th_inc(&th_violations);
    ringbuffer_retrieve(in, AMP_REC);
  }
}

static const gev_handler amp_handler = {
    .on_connect = th_count_connect,
    .on_message = amp_msg,
    .on_close = th_count_close,
};

static void held_input_case(bool peer_eof)
{
  enum { RECS = 40 };
  gev_options opt = {.num_loops = 1, .max_buffer = 64 * 1024};
  char *req = malloc(RECS * AMP_REC), *rep = malloc(AMP_REC * AMP_X);
  th_server *srv;
  int fd;

  ck_assert(req && rep);
  th_reset_counters();
  th_fill(req, RECS * AMP_REC, 17);
  srv = th_start(&amp_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  /* All requests at once: more replies than the cap holds. The client
   * then only reads; nothing else arrives to wake the held input. */
  ck_assert(th_write_all(fd, req, RECS * AMP_REC));
  if (peer_eof)
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
  for (int i = 0; i < RECS; i++) {
    ck_assert_msg(th_read_exact(fd, rep, AMP_REC * AMP_X),
                  "reply %d of %d never came", i, RECS);
    for (int k = 0; k < AMP_X; k++)
      ck_assert_msg(memcmp(rep + k * AMP_REC, req + i * AMP_REC, AMP_REC) == 0,
                    "reply %d differs", i);
  }
  if (peer_eof)
    ck_assert(th_wait_eof(fd, 10000));
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  free(req);
  free(rep);
}

START_TEST(held_input_shown_after_drain)
{
  held_input_case(false);
}
END_TEST

START_TEST(held_input_shown_after_peer_eof)
{
  held_input_case(true);
}
END_TEST

/* ---- 12. TCP_NODELAY ----------------------------------------------------- */

static int nd_value = -1;

static void nd_connect(gev_conn *c)
{
  int v = 0;
  socklen_t len = sizeof(v);

  if (getsockopt(gev_conn_fd(c), IPPROTO_TCP, TCP_NODELAY, &v, &len) < 0)
    v = -2;
  __atomic_store_n(&nd_value, v, __ATOMIC_SEQ_CST);
  th_inc(&th_connects);
}

static const gev_handler nd_handler = {
    .on_connect = nd_connect,
    .on_message = th_echo_msg,
};

START_TEST(tcp_nodelay_set)
{
  for (int reuse = 0; reuse < 2; reuse++) {
    gev_options opt = {.num_loops = 2, .reuse_port = reuse};
    th_server *srv;
    int fd;

    th_reset_counters();
    nd_value = -1;
    srv = th_start(&nd_handler, &opt);
    fd = th_connect(srv->port);
    ck_assert_int_ge(fd, 0);
    ck_assert(th_wait_int(&th_connects, 1, 10000));
    ck_assert_msg(th_ld(&nd_value) == 1, "TCP_NODELAY is %d (reuse_port %d)",
                  th_ld(&nd_value), reuse);
    close(fd);
    th_stop(srv);
  }
}
END_TEST

/* ---- 13. SIGPIPE ----------------------------------------------------------
 *
 * A write to a socket that can no longer send raises SIGPIPE unless it
 * passes MSG_NOSIGNAL, and SIGPIPE's default action kills the process. A
 * server's workers block every signal, which would hide a missing flag, so
 * this runs where nothing hides it: a standalone loop, on a thread with
 * SIGPIPE unblocked and at SIG_DFL, in a child process the test forks. A
 * regression kills the child, and the test reports how it died.
 *
 * The kernel raises SIGPIPE only with EPIPE. A reset in ESTABLISHED makes
 * the first write fail with ECONNRESET, silently; the writes after it get
 * EPIPE. A reset after the peer's FIN (CLOSE_WAIT) makes the first write
 * EPIPE already. The three cases use both to reach each write the library
 * makes:
 *   queued: 8 MiB sent to a peer that does not read, most of it queued;
 *           FIN, then reset: the queued write (ringbuffer_write_fd) gets
 *           EPIPE.
 *   direct: nothing queued; FIN and reset while the loop runs a task that
 *           then sends: the direct send (the transport's send) gets EPIPE.
 *   again:  nothing queued; reset alone: the direct send gets ECONNRESET,
 *           its bytes are queued and the write at the end of the pass gets
 *           EPIPE.
 *   wrapped: as queued, but the peer read a part first and on_message
 *           appended more, so the queue wraps and goes out in one sendmsg.
 * In each, the connection closes with on_close exactly once. */

enum { SP_QUEUED, SP_DIRECT, SP_AGAIN, SP_WRAPPED };
#define SP_BIG (8 * MIB)
#define SP_SMALL ((size_t)65536)

/* The child's state (the parent never touches it). */
typedef struct sp_state {
  int mode;
  gev_loop *l;
  gev_conn *c; /* the loop's thread only */
  int fd;      /* c's socket, for the test's thread to poll */
  int connects, closes;
  int blocked;    /* SIGPIPE was blocked in the loop's thread */
  int ready;      /* the task runs: reset the peer now */
  int reset_seen; /* the task saw the reset arrive */
  int send_rc, run_rc;
  size_t queued; /* output queued after the send */
  int wrapped;   /* on_message left the queue in two segments */
  unsigned char *data;
} sp_state;

static sp_state sp;

static void sp_check_mask(void)
{
  sigset_t cur;
  struct sigaction sa;

  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  sigaction(SIGPIPE, NULL, &sa);
  if (sigismember(&cur, SIGPIPE) || sa.sa_handler != SIG_DFL)
    th_st(&sp.blocked, 1);
}

static void sp_connect(gev_conn *c)
{
  sp_check_mask();
  sp.c = c;
  th_st(&sp.fd, gev_conn_fd(c));
  if (sp.mode == SP_QUEUED || sp.mode == SP_WRAPPED) {
    int snd = 65536; /* keeps what the kernel takes small */

    setsockopt(gev_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
    sp.send_rc = gev_conn_send(c, sp.data, SP_BIG);
    sp.queued = gev_conn_write_buffer_len(c);
  }
  th_inc(&sp.connects);
}

/* With output queued, `out` is the queue: its head has moved (the peer
 * read a part), so filling its free room wraps it. */
static void sp_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t room = ringbuffer_cap(out) - ringbuffer_len(out);
  struct iovec seg[2];

  (void)c;
  ringbuffer_retrieve_all(in);
  if (sp.mode != SP_WRAPPED || th_ld(&sp.wrapped) || ringbuffer_empty(out))
    return;
  if (room > 0 && room <= SP_BIG && ringbuffer_write(out, sp.data, room) == 0)
    ringbuffer_peek(out, ringbuffer_len(out), seg);
  else
    seg[1].iov_len = 0;
  th_st(&sp.wrapped, seg[1].iov_len > 0 ? 1 : -1);
}

static void sp_close(gev_conn *c)
{
  (void)c;
  th_inc(&sp.closes);
}

static const gev_handler sp_handler = {sp_connect, sp_message, sp_close};

/* In the loop's thread, which it keeps busy until the peer's reset has
 * arrived, so that the loop cannot see the reset first: then a send with
 * nothing queued, which goes straight to the socket. */
static void sp_send_after_reset(void *arg)
{
  struct pollfd p = {.fd = gev_conn_fd(sp.c), .events = 0};
  uint64_t end = th_now_ms() + 5000;

  (void)arg;
  th_st(&sp.ready, 1);
  while (th_now_ms() < end)
    if (poll(&p, 1, 50) == 1 && (p.revents & (POLLERR | POLLHUP))) {
      th_st(&sp.reset_seen, 1);
      break;
    }
  sp.send_rc = gev_conn_send(sp.c, sp.data, SP_SMALL);
  sp.queued = gev_conn_write_buffer_len(sp.c);
}

static void *sp_loop_main(void *arg)
{
  sigset_t pipe_only;

  (void)arg;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_UNBLOCK, &pipe_only, NULL);
  sp.run_rc = gev_loop_run(sp.l);
  return NULL;
}

/* A listener on 127.0.0.1, port 0, with a small receive buffer (inherited
 * by the accepted peer) so that most of a large send stays queued. */
static int sp_listen(int *port)
{
  struct sockaddr_in sin = {.sin_family = AF_INET};
  socklen_t len = sizeof(sin);
  int rcv = 65536, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 4) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(sin.sin_port);
  return fd;
}

static bool sp_wrap_done(void *arg)
{
  (void)arg;
  return th_ld(&sp.wrapped) != 0;
}

/* Waits (bounded) until the peer's FIN has reached gev's socket, which
 * stays open meanwhile (output is queued, or the loop is busy in a task).
 * Polls the fd number: the connection itself is the loop's to touch. */
static bool sp_fin_arrived(void)
{
  struct pollfd p = {.fd = th_ld(&sp.fd), .events = POLLRDHUP};

  return poll(&p, 1, 5000) == 1 && (p.revents & POLLRDHUP);
}

/* The peer reads 1 MiB, so the queue's head moves, then sends a byte for
 * on_message to wrap the queue with. */
static bool sp_wrap(int peer)
{
  struct timeval tv = {10, 0};
  size_t left = MIB;
  char buf[16384];

  setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while (left > 0) {
    ssize_t r = recv(peer, buf, left < sizeof(buf) ? left : sizeof(buf), 0);
    if (r <= 0)
      return false;
    left -= (size_t)r;
  }
  return send(peer, "w", 1, MSG_NOSIGNAL) == 1 &&
         th_wait_until(sp_wrap_done, NULL, 10000) && th_ld(&sp.wrapped) == 1;
}

/* The child's body: "" on success, else what went wrong. Never returns
 * early without stopping the loop it started. */
static const char *sp_scenario(int lfd, int port)
{
  char addr[64];
  gev_connect_options o = {.address = addr, .timeout_ms = 5000};
  struct linger lg = {1, 0};
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  int peer;

  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  if (gev_loop_connect(sp.l, &sp_handler, &o) != 0)
    return "gev_loop_connect failed";
  if (poll(&p, 1, 10000) != 1 ||
      (peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
    return "the loop did not connect within 10 s";
  if (!th_wait_int(&sp.connects, 1, 10000))
    return "on_connect did not run within 10 s";
  if (th_ld(&sp.blocked))
    return "SIGPIPE is blocked or handled in the loop's thread";
  if (sp.mode == SP_QUEUED || sp.mode == SP_WRAPPED) {
    if (sp.send_rc != 0 || sp.queued == 0)
      return "the 8 MiB send was not partly queued";
    if (sp.mode == SP_WRAPPED && !sp_wrap(peer))
      return "the queue did not wrap";
    shutdown(peer, SHUT_WR);
    if (!sp_fin_arrived())
      return "the peer's FIN did not arrive";
  } else {
    if (gev_loop_post(sp.l, sp_send_after_reset, NULL) != 0 ||
        !th_wait_int(&sp.ready, 1, 10000))
      return "the sending task did not run";
    if (sp.mode == SP_DIRECT) {
      shutdown(peer, SHUT_WR);
      if (!sp_fin_arrived())
        return "the peer's FIN did not arrive";
    }
  }
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(peer); /* RST */
  if (!th_wait_int(&sp.closes, 1, 10000))
    return "the reset connection did not close within 10 s";
  if (sp.mode == SP_DIRECT || sp.mode == SP_AGAIN) {
    if (!th_ld(&sp.reset_seen))
      return "the reset did not reach the loop's socket";
    if (sp.send_rc != 0 || sp.queued != SP_SMALL)
      return "the send after the reset was not accepted and queued";
  }
  return "";
}

static int sp_child(int mode, int report)
{
  const char *why = "setup failed";
  pthread_t t;
  struct timespec ts;
  int lfd, port;

  signal(SIGPIPE, SIG_DFL);
  memset(&sp, 0, sizeof(sp));
  sp.mode = mode;
  sp.data = malloc(SP_BIG);
  if (sp.data && (lfd = sp_listen(&port)) >= 0) {
    memset(sp.data, 'p', SP_BIG);
    if (gev_loop_new(&sp.l) == 0 &&
        pthread_create(&t, NULL, sp_loop_main, NULL) == 0) {
      why = sp_scenario(lfd, port);
      gev_loop_stop(sp.l);
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += 10;
      if (pthread_timedjoin_np(t, NULL, &ts) != 0)
        why = "gev_loop_run did not return within 10 s of stop";
      else if (!*why && (sp.run_rc != 0 || th_ld(&sp.closes) != 1))
        why = "on_close did not run exactly once";
      else
        gev_loop_free(sp.l);
    }
    close(lfd);
  }
  free(sp.data);
  if (write(report, why, strlen(why)) < 0)
    return 2;
  return *why ? 1 : 0;
}

/* Runs one case in a child; fails the test if SIGPIPE (or anything) killed
 * it, or it reported a failure. */
static void sp_fork(int mode, const char *name)
{
  char why[256] = "";
  uint64_t end = th_now_ms() + 60000;
  int fds[2], st = 0;
  ssize_t n;
  pid_t pid;

  ck_assert_int_eq(pipe(fds), 0);
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    _exit(sp_child(mode, fds[1]));
  }
  close(fds[1]);
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (th_now_ms() >= end) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      close(fds[0]);
      ck_abort_msg("%s: the child did not finish within 60 s", name);
    }
    usleep(10000);
  }
  n = read(fds[0], why, sizeof(why) - 1);
  why[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  ck_assert_msg(!WIFSIGNALED(st) || WTERMSIG(st) != SIGPIPE,
                "%s: SIGPIPE killed the process: a write to the reset "
                "socket went without MSG_NOSIGNAL",
                name);
  ck_assert_msg(!WIFSIGNALED(st), "%s: the child died of signal %d", name,
                WTERMSIG(st));
  ck_assert_msg(WEXITSTATUS(st) == 0, "%s: %s (child exit %d)", name,
                *why ? why : "no report", WEXITSTATUS(st));
}

START_TEST(no_sigpipe_on_reset_with_pending_write)
{
  sp_fork(SP_QUEUED, "queued write after FIN and reset");
  sp_fork(SP_DIRECT, "direct send after FIN and reset");
  sp_fork(SP_AGAIN, "second write after a reset");
  sp_fork(SP_WRAPPED, "wrapped queued write after FIN and reset");
}
END_TEST

/* ---- the suite -------------------------------------------------------------
 */

/* ---- sends from the loop's own thread, outside on_message ------------- */

static gev_conn *ds_conn;
static int ds_rc[3];
static size_t ds_queued[3];
static unsigned char *ds_big;
#define DS_BIG (16 * MIB)

static void ds_connect(gev_conn *c)
{
  ds_conn = c;
  th_inc(&th_connects);
}

static const gev_handler ds_handler = {ds_connect, th_echo_msg, th_count_close};

/* A send larger than the kernel takes: the head goes straight to the
 * socket, the rest is queued, and later sends queue behind it. */
static void ds_burst(void *arg)
{
  (void)arg;
  ds_rc[0] = gev_conn_send(ds_conn, ds_big, DS_BIG);
  ds_queued[0] = gev_conn_write_buffer_len(ds_conn);
  ds_rc[1] = gev_conn_send(ds_conn, "after", 5);
  ds_queued[1] = gev_conn_write_buffer_len(ds_conn);
}

/* With nothing queued, a send leaves within the call. */
static void ds_single(void *arg)
{
  (void)arg;
  ds_rc[2] = gev_conn_send(ds_conn, "single", 6);
  ds_queued[2] = gev_conn_write_buffer_len(ds_conn);
}

START_TEST(send_in_loop_direct_then_queued)
{
  gev_options opt = {.num_loops = 1};
  unsigned char *got = malloc(DS_BIG);
  th_server *srv;
  char tail[8];
  int fd;

  ds_big = malloc(DS_BIG);
  ck_assert(got && ds_big);
  th_fill(ds_big, DS_BIG, 77);
  th_reset_counters();
  ds_conn = NULL;
  srv = th_start(&ds_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 10000));
  th_run_in_loop(gev_conn_loop(ds_conn), ds_burst, NULL);
  ck_assert_int_eq(ds_rc[0], 0);
  ck_assert_int_eq(ds_rc[1], 0);
  /* The client has read nothing: the kernel cannot hold 16 MiB, so part
   * is queued, and "after" is queued behind it, not sent before it. */
  ck_assert_uint_gt(ds_queued[0], 0);
  ck_assert_uint_lt(ds_queued[0], DS_BIG);
  ck_assert_uint_eq(ds_queued[1], ds_queued[0] + 5);
  ck_assert(th_read_exact(fd, got, DS_BIG));
  ck_assert_msg(memcmp(got, ds_big, DS_BIG) == 0, "stream corrupted");
  ck_assert(th_read_exact(fd, tail, 5));
  ck_assert(memcmp(tail, "after", 5) == 0);
  /* Everything drained: the next send is written at once. */
  th_run_in_loop(gev_conn_loop(ds_conn), th_noop, NULL);
  th_run_in_loop(gev_conn_loop(ds_conn), ds_single, NULL);
  ck_assert_int_eq(ds_rc[2], 0);
  ck_assert_uint_eq(ds_queued[2], 0);
  ck_assert(th_read_exact(fd, tail, 6));
  ck_assert(memcmp(tail, "single", 6) == 0);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  free(got);
  free(ds_big);
}
END_TEST

/* A connection that keeps a few bytes of input (a partial line) holds
 * storage for about that much, not the loop's 64 KiB read buffer: the
 * handler records the capacity of `in` on each call and consumes nothing
 * until a newline. */
static int pk_calls, pk_last_len, pk_last_cap;
static size_t pk_cap[4], pk_len[4];

static void pk_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  int i = th_ld(&pk_calls);

  (void)c;
  (void)out;
  if (i < 4) {
    pk_cap[i] = ringbuffer_cap(in);
    pk_len[i] = ringbuffer_len(in);
  }
  th_st(&pk_last_cap, (int)ringbuffer_cap(in));
  th_st(&pk_last_len, (int)ringbuffer_len(in));
  if (ringbuffer_find(in, "\n", 1) >= 0)
    ringbuffer_retrieve_all(in);
  th_inc(&pk_calls);
}

START_TEST(kept_input_is_right_sized)
{
  const gev_handler h = {.on_connect = th_count_connect,
                         .on_message = pk_msg,
                         .on_close = th_count_close};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  int fd;

  th_reset_counters();
  th_st(&pk_calls, 0);
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "abc", 3));
  ck_assert(th_wait_int(&pk_calls, 1, 10000));
  ck_assert(th_write_all(fd, "def", 3));
  ck_assert(th_wait_int(&pk_calls, 2, 10000));
  /* The first read lands in the loop's shared buffer... */
  ck_assert_uint_eq(pk_len[0], 3);
  ck_assert_uint_ge(pk_cap[0], 64 * 1024);
  /* ...and the connection keeps its 3 bytes in a buffer of its own. */
  ck_assert_uint_eq(pk_len[1], 6);
  ck_assert_msg(pk_cap[1] <= 4096, "kept 3 bytes in a %zu-byte buffer",
                pk_cap[1]);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));

  /* A connection that held 40 KB leaves a large spare in the loop's pool;
   * the next one to keep a few bytes must not get that spare's storage. */
  {
    static char big[40000];
    int fd2 = th_connect(srv->port), fd3;

    ck_assert_int_ge(fd2, 0);
    memset(big, 'x', sizeof(big));
    ck_assert(th_write_all(fd2, big, sizeof(big)));
    ck_assert(th_wait_int(&pk_last_len, (int)sizeof(big), 10000));
    ck_assert_int_gt(th_ld(&pk_last_cap), 16384);
    ck_assert(th_write_all(fd2, "\n", 1));
    ck_assert(th_wait_int(&pk_last_len, (int)sizeof(big) + 1, 10000));
    fd3 = th_connect(srv->port);
    ck_assert_int_ge(fd3, 0);
    /* 30 KB consumed where they were read make the loop's read buffer
     * large again (when they come in one read, as on loopback they do), so
     * the 3 bytes below are copied out of it, into that large spare unless
     * adopt() lets the spare's storage go. */
    big[29999] = '\n';
    th_st(&pk_last_len, 0); /* th_wait_int waits for at least its value */
    ck_assert(th_write_all(fd3, big, 30000));
    ck_assert(th_wait_int(&pk_last_len, 30000, 10000));
    th_st(&pk_last_len, 0);
    ck_assert(th_write_all(fd3, "abc", 3));
    ck_assert(th_wait_int(&pk_last_len, 3, 10000));
    ck_assert(th_write_all(fd3, "def", 3));
    ck_assert(th_wait_int(&pk_last_len, 6, 10000));
    ck_assert_msg(th_ld(&pk_last_cap) <= 4096,
                  "kept 3 bytes in a %d-byte buffer", th_ld(&pk_last_cap));
    close(fd2);
    close(fd3);
    ck_assert(th_wait_int(&th_closes, 3, 10000));
  }
  th_stop(srv);
}
END_TEST

/* ---- half-open connections (on_peer_eof) -------------------------------- */

/* The handler echoes; on the peer's FIN it answers once more 50 ms later
 * (as a proxy would when its upstream answers), then shuts down. */
static int ho_eof_calls, ho_msgs_at_eof, ho_bad_thread, ho_late_rc = 1,
                                                        ho_shut_rc = 1;

static void ho_late(void *arg)
{
  gev_conn *c = arg;

  th_st(&ho_late_rc, gev_conn_send(c, "bye", 3));
  th_st(&ho_shut_rc, gev_conn_shutdown_write(c));
  gev_conn_unref(c);
}

static void ho_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  th_inc(&pk_calls);
  if (th_echo_move(in, out))
    th_inc(&th_violations);
}

static void ho_eof(gev_conn *c)
{
  th_inc(&ho_eof_calls);
  th_st(&ho_msgs_at_eof, th_ld(&pk_calls));
  if (!gev_loop_in_thread(gev_conn_loop(c)))
    th_inc(&ho_bad_thread);
  gev_conn_ref(c);
  if (gev_loop_run_after(gev_conn_loop(c), 50, ho_late, c) == 0)
    gev_conn_unref(c); /* 0 is no timer: nothing will run ho_late */
}

/* A one-loop server whose handler has on_peer_eof, with the counters
 * reset, and a client connected to it in *fd. */
static th_server *ho_start(void (*msg)(gev_conn *, ringbuffer *, ringbuffer *),
                           void (*eof)(gev_conn *), int *fd)
{
  const gev_handler h = {.on_connect = th_count_connect,
                         .on_message = msg,
                         .on_close = th_count_close,
                         .on_peer_eof = eof};
  gev_options opt = {.num_loops = 1};
  th_server *srv;

  th_reset_counters();
  th_st(&pk_calls, 0);
  th_st(&ho_eof_calls, 0);
  srv = th_start(&h, &opt); /* the server keeps a copy of h */
  *fd = th_connect(srv->port);
  ck_assert_int_ge(*fd, 0);
  return srv;
}

START_TEST(half_open_answers_after_peer_eof)
{
  char got[8];
  int fd;
  th_server *srv = ho_start(ho_msg, ho_eof, &fd);

  ck_assert(th_write_all(fd, "hello", 5));
  ck_assert(th_read_exact(fd, got, 5));
  ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
  /* The connection stays open for the late answer, then sends FIN. */
  ck_assert(th_read_exact(fd, got, 3));
  ck_assert(memcmp(got, "bye", 3) == 0);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(th_ld(&ho_late_rc), 0);
  ck_assert_int_eq(th_ld(&ho_shut_rc), 0);
  ck_assert_int_eq(th_ld(&ho_eof_calls), 1);
  ck_assert_int_eq(th_ld(&ho_msgs_at_eof), 1); /* "hello" came first */
  ck_assert_int_eq(th_ld(&ho_bad_thread), 0);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  close(fd);
  th_stop(srv);
}
END_TEST

/* Held input at the FIN is shown to on_message before on_peer_eof, which
 * then closes; a half-open connection also leaves with gev_conn_close. */
static int hc_seen_len;

static void hc_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  th_st(&hc_seen_len, (int)ringbuffer_len(in)); /* holds it: no newline */
  th_inc(&pk_calls);
}

static void hc_eof(gev_conn *c)
{
  th_inc(&ho_eof_calls);
  th_st(&ho_msgs_at_eof, th_ld(&pk_calls));
  th_st(&ho_late_rc, gev_conn_send(c, "held ", 5));
  th_st(&ho_shut_rc, gev_conn_close(c));
}

START_TEST(half_open_close_from_peer_eof)
{
  char got[8];
  int fd;
  th_server *srv = ho_start(hc_msg, hc_eof, &fd);

  ck_assert(th_write_all(fd, "partial", 7));
  ck_assert(th_wait_int(&pk_calls, 1, 10000));
  ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
  ck_assert(th_read_exact(fd, got, 5));
  ck_assert(memcmp(got, "held ", 5) == 0);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(th_ld(&ho_eof_calls), 1);
  /* on_message saw the held bytes again at the FIN, before on_peer_eof. */
  ck_assert_int_eq(th_ld(&ho_msgs_at_eof), 2);
  ck_assert_int_eq(th_ld(&hc_seen_len), 7);
  ck_assert_int_eq(th_ld(&ho_late_rc), 0);
  ck_assert_int_eq(th_ld(&ho_shut_rc), 0);
  close(fd);
  th_stop(srv);
}
END_TEST

/* A large message must not leave its storage in the loop's shared buffers
 * for good. The handler holds SB_BIG bytes, moves them into the shared
 * output (the storage changes hands) and sends only the last byte, so the
 * shared output is left empty but large. One-byte probes then record the
 * largest storage on_message is shown; within a few seconds it must be
 * back to 64 KiB. */
#define SB_BIG 200000
static int sb_probes, sb_cap;

static void sb_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t len = ringbuffer_len(in), cap;
  struct iovec seg[2];

  (void)c;
  ringbuffer_peek(in, 1, seg);
  if (*(const char *)seg[0].iov_base == 'x') {
    if (len < SB_BIG)
      return; /* hold until all of it is here */
    if (ringbuffer_move(out, in, len) != (ssize_t)len)
      th_inc(&th_violations);
    ringbuffer_retrieve(out, len - 1);
    return;
  }
  cap = ringbuffer_cap(in) > ringbuffer_cap(out) ? ringbuffer_cap(in)
                                                 : ringbuffer_cap(out);
  th_st(&sb_cap, (int)cap);
  th_inc(&sb_probes);
  th_echo_move(in, out);
}

START_TEST(shared_buffers_shrink_after_large_message)
{
  const gev_handler h = {.on_connect = th_count_connect,
                         .on_message = sb_msg,
                         .on_close = th_count_close};
  gev_options opt = {.num_loops = 1};
  char *big = malloc(SB_BIG), got;
  uint64_t t0;
  int fd, i, first_cap;
  th_server *srv;

  ck_assert(big);
  th_reset_counters();
  th_st(&sb_probes, 0);
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  memset(big, 'x', SB_BIG);
  big[SB_BIG - 1] = 'B';
  t0 = th_now_ms(); /* before the trim timer can be armed */
  ck_assert(th_write_all(fd, big, SB_BIG));
  ck_assert(th_read_exact(fd, &got, 1));
  ck_assert_int_eq(got, 'B');
  ck_assert(th_write_all(fd, "p", 1));
  ck_assert(th_read_exact(fd, &got, 1));
  first_cap = th_ld(&sb_cap);
  /* Right after the large message its storage is still in sight, unless
   * this machine took longer than the trim delay (1 s) to get here. */
  if (th_now_ms() - t0 < 1000)
    ck_assert_int_gt(first_cap, 64 * 1024);
  for (i = 0; i < 60 && th_ld(&sb_cap) > 64 * 1024; i++) {
    usleep(100 * 1000);
    ck_assert(th_write_all(fd, "p", 1));
    ck_assert(th_read_exact(fd, &got, 1));
    ck_assert_int_eq(got, 'p');
  }
  ck_assert_msg(th_ld(&sb_cap) <= 64 * 1024,
                "shared buffers still hold %d bytes after %d probes",
                th_ld(&sb_cap), th_ld(&sb_probes));
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  free(big);
}
END_TEST

/* gev_conn_close_lingering: the reply, then FIN, and bytes the peer sends
 * afterwards are read and dropped. A plain close leaves no socket to take
 * them: the kernel answers with RST, which on a peer still sending (or
 * with bytes in flight at the close) costs it the reply or a clean end;
 * here, where the peer has read the reply, its next send fails. */
static int lg_msgs, lg_rc, lg_send_rc, lg_again_rc, lg_eof_calls;
static uint64_t lg_closed_at;
static gev_conn *lg_conn;

static void lg_connect(gev_conn *c)
{
  gev_conn_ref(c);
  lg_conn = c;
  th_count_connect(c);
}

static void lg_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  th_inc(&lg_msgs);
  ringbuffer_retrieve_all(in);
  ringbuffer_write(out, "reply", 5);
  th_st(&lg_rc, gev_conn_close_lingering(c, 5000));
  th_st(&lg_send_rc, gev_conn_send(c, "late", 4));
  th_st(&lg_again_rc, gev_conn_close_lingering(c, 5000));
}

static void lg_peer_eof(gev_conn *c)
{
  (void)c;
  th_inc(&lg_eof_calls);
}

static void lg_close(gev_conn *c)
{
  __atomic_store_n(&lg_closed_at, th_now_ms(), __ATOMIC_SEQ_CST);
  th_count_close(c);
}

static th_server *lg_start(bool reply, int *fd)
{
  static gev_handler h;
  gev_options opt = {.num_loops = 1};
  th_server *srv;

  h = (gev_handler){.on_connect = lg_connect,
                    .on_message = reply ? lg_msg : NULL,
                    .on_close = lg_close,
                    .on_peer_eof = lg_peer_eof};
  th_reset_counters();
  th_st(&lg_msgs, 0);
  th_st(&lg_eof_calls, 0);
  lg_conn = NULL;
  srv = th_start(&h, &opt);
  *fd = th_connect(srv->port);
  ck_assert_int_ge(*fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 10000));
  return srv;
}

/* Reads to EOF for up to 10 s: 0 at EOF, else the errno of the failure. */
static int read_to_eof(int fd)
{
  char b[64];
  struct timeval tv = {.tv_sec = 10};
  ssize_t n;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while ((n = read(fd, b, sizeof(b))) > 0)
    ;
  return n == 0 ? 0 : errno;
}

START_TEST(close_lingering_no_reset)
{
  char got[8];
  int fd, err = 0;
  socklen_t len = sizeof(err);
  th_server *srv = lg_start(true, &fd);

  ck_assert(th_write_all(fd, "req", 3));
  ck_assert(th_read_exact(fd, got, 5));
  ck_assert(memcmp(got, "reply", 5) == 0);
  ck_assert_int_eq(read_to_eof(fd), 0); /* FIN after the reply */
  /* More than the kernel buffers hold: only a server that reads (and
   * drops) them lets this finish within the send timeout. */
  {
    size_t n = 16 * MIB;
    char *late = malloc(n);
    ck_assert_ptr_nonnull(late);
    memset(late, 'L', n);
    ck_assert_msg(th_write_all(fd, late, n), "late bytes not read: %s",
                  strerror(errno));
    free(late);
  }
  usleep(100000); /* a reset would be back by now */
  ck_assert_msg(th_write_all(fd, "more", 4), "send after the FIN: %s",
                strerror(errno));
  ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  ck_assert_msg(err == 0, "socket error %s", strerror(err));
  ck_assert_int_eq(th_ld(&th_closes), 0); /* lingering until the peer goes */
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(th_ld(&lg_rc), 0);
  ck_assert_int_eq(th_ld(&lg_send_rc), -ENOTCONN);
  ck_assert_int_eq(th_ld(&lg_again_rc), -ENOTCONN);
  ck_assert_int_eq(th_ld(&lg_msgs), 1);      /* the late bytes: dropped */
  ck_assert_int_eq(th_ld(&lg_eof_calls), 0); /* not shown to the handler */
  gev_conn_unref(lg_conn);
  th_stop(srv);
}
END_TEST

/* From another thread, on a peer that never closes: the deadline ends it,
 * and not before. */
START_TEST(close_lingering_deadline_from_thread)
{
  uint64_t t0;
  int fd;
  th_server *srv = lg_start(false, &fd);

  t0 = th_now_ms();
  ck_assert_int_eq(gev_conn_close_lingering(lg_conn, 300), 0);
  ck_assert_int_eq(read_to_eof(fd), 0); /* FIN */
  ck_assert(th_write_all(fd, "x", 1));  /* read and dropped, no RST */
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_uint_ge(__atomic_load_n(&lg_closed_at, __ATOMIC_SEQ_CST), t0 + 300);
  ck_assert_int_eq(gev_conn_close_lingering(lg_conn, 300), -ENOTCONN);
  ck_assert_int_eq(gev_conn_close_lingering(NULL, 300), -EINVAL);
  close(fd);
  gev_conn_unref(lg_conn);
  th_stop(srv);
}
END_TEST

static Suite *conn_suite(void)
{
  const th_case cases[] = {
      {"echo_many_clients", echo_many_clients, 120},
      {"send_in_loop_direct_then_queued", send_in_loop_direct_then_queued, 60},
      {"echo_64mib_stream", echo_64mib_stream, 120},
      {"line_protocol_partial_frames", line_protocol_partial_frames, 60},
      {"send_from_thread_while_closing", send_from_thread_while_closing, 60},
      {"send_from_thread_during_stop", send_from_thread_during_stop, 60},
      {"send_from_threads_fifo", send_from_threads_fifo, 60},
      {"callback_order_and_thread", callback_order_and_thread, 60},
      {"close_idempotent", close_idempotent, 60},
      {"peer_eof_flushes_replies", peer_eof_flushes_replies, 60},
      {"peer_eof_with_backpressure", peer_eof_with_backpressure, 60},
      {"close_in_on_message_flushes", close_in_on_message_flushes, 60},
      {"shutdown_write_half_close", shutdown_write_half_close, 60},
      {"shutdown_write_from_thread", shutdown_write_from_thread, 60},
      {"max_buffer_caps_input", max_buffer_caps_input, 60},
      {"held_input_shown_after_drain", held_input_shown_after_drain, 60},
      {"held_input_shown_after_peer_eof", held_input_shown_after_peer_eof, 60},
      {"tcp_nodelay_set", tcp_nodelay_set, 60},
      {"no_sigpipe_on_reset_with_pending_write",
       no_sigpipe_on_reset_with_pending_write, 60},
      {"kept_input_is_right_sized", kept_input_is_right_sized, 60},
      {"shared_buffers_shrink_after_large_message",
       shared_buffers_shrink_after_large_message, 60},
      {"close_lingering_no_reset", close_lingering_no_reset, 60},
      {"close_lingering_deadline_from_thread",
       close_lingering_deadline_from_thread, 60},
      {"half_open_answers_after_peer_eof", half_open_answers_after_peer_eof,
       60},
      {"half_open_close_from_peer_eof", half_open_close_from_peer_eof, 60},
  };

  return th_suite("conn", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(conn_suite());
}
