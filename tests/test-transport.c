/* test-transport.c - the connection layer through a faulty transport.
 *
 * The test transport wraps the plaintext one and, driven by a seeded PRNG,
 * reads and writes a few bytes at a time, says "would block" while the
 * socket is ready, asks for the other direction as a TLS handshake or key
 * update does (a read that wants the socket writable first, a write that
 * wants it readable first), stalls the FIN, breaks one connection, or
 * refuses to open. Every byte must still arrive in order and every
 * callback run exactly once. Its per-connection state is allocated in
 * open() and freed in close(), so a missed close shows as a leak under
 * ASan and valgrind, and a call after close as a use after free.
 *
 * Failures print the seed; GEV_TP_SEED=<n> reruns with it (the faults a
 * connection draws follow from it; their timing still varies). */
#include "helpers.h"

#include <gev/transport.h>

#include "conn-internal.h" /* only to print a stuck connection's state */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KIB 1024u
#define MIB (1024u * 1024u)
#define TP_MAX_CONNS 32
#define TP_MAGIC 0x74706f6eu
/* Fake "would block" answers in a row, at most: the socket is ready, so
 * the level-triggered loop asks again, and this bounds how often. */
#define TP_EAGAIN_RUN 3

/* ---- the seed ----------------------------------------------------------- */

static unsigned tp_seed;

static unsigned base_seed(unsigned dflt)
{
  const char *s = getenv("GEV_TP_SEED");

  return s && *s ? (unsigned)strtoul(s, NULL, 0) : dflt;
}

static const char *tp_fmt(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The message of a failed check (the test thread only). */
static const char *tp_fmt(const char *fmt, ...)
{
  static char buf[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

#define TP_CHECK(cond, ...)                                                    \
  ck_assert_msg(cond, "seed %u (rerun: GEV_TP_SEED=%u): %s", tp_seed, tp_seed, \
                tp_fmt(__VA_ARGS__))

static uint64_t rnd(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* 1..n, mostly small: half the draws stay under 16. */
static size_t draw_size(uint64_t *s, size_t n)
{
  uint64_t r = rnd(s);
  size_t m = (r & 1) && n > 16 ? 16 : n;

  return 1 + (size_t)((r >> 1) % m);
}

/* ---- the transport ------------------------------------------------------ */

/* What the transport does, and what it saw. One per test, shared by the
 * connections of every loop: the counters are atomic (th_inc, th_ld). */
typedef struct tp_cfg {
  /* Odds in percent, per call. */
  unsigned short_pct;  /* read or write at most a few bytes */
  unsigned eagain_pct; /* would block, with the socket ready */
  unsigned want_pct;   /* read: WANT_WRITE; write and send: WANT_READ */
  /* When a write may wait for readability although nothing is readable
   * yet: only while the peer is known to send more, or the test hangs. */
  size_t expect_in; /* the peer sends this much in all (0: unknown) */
  bool echo_peer;   /* the peer echoes: what we wrote comes back */
  int fin_stalls;   /* shutdown first answers -EAGAIN / WANT_WRITE so often */
  int fail_conn;    /* the connection (by open order) that breaks; -1 none */
  int fail_at;      /* ... at its fail_at-th call of fail_kind */
  int fail_kind;    /* 0: read or write; 1: read; 2: write or send */
  bool fail_odd_opens; /* open() fails with -EPROTO for odd indices */
  /* Scripted instead of random: every write takes at most write_cap bytes,
   * and the first write that finds input waiting asks for readability. */
  size_t write_cap;

  int next_index;
  int opens, closes, failed_opens, failed_closes, injected;
  int shorts, fake_eagain, want_read, want_write, stashed, enobufs;
  int early_read, early_write, fin_calls, fin_stalled;
  int on_connects[TP_MAX_CONNS], on_closes[TP_MAX_CONNS];
  struct tp_conn *live[TP_MAX_CONNS]; /* open states, for a failure's dump */
  int bugs;      /* contract breaches seen by the transport */
  char bug[160]; /* the first one */
  int bug_claimed;
} tp_cfg;

/* Per connection: from open() to close(). */
typedef struct tp_conn {
  unsigned magic;
  tp_cfg *cfg;
  gev_conn *c;
  pthread_t thread; /* every operation runs in the connection's loop */
  uint64_t rng;
  int index;
  int calls;        /* of fail_kind, for the break */
  int eagain_run;   /* fake would-blocks in a row */
  int fin_stalls;   /* left */
  bool open_failed; /* no operation but close may follow */
  bool broken;      /* -ECONNRESET from now on */
  bool fin_sent;    /* nothing may be written after it */
  /* write said WANT_READ: it goes on once the socket is readable, or once
   * a read took input off it (as TLS's read processes the record its write
   * waited for). read said WANT_WRITE: the same the other way round. */
  bool write_blocked;
  bool read_blocked;
  bool scripted; /* write_cap's WANT_READ was given */
  size_t read_total, written_total;
  /* A read that wants to write first has taken these bytes off the socket
   * already (as TLS takes a record): only its retry delivers them, so a
   * library that waits for readability instead never sees them. */
  size_t stash_len;
  unsigned char stash[512];
} tp_conn;

static tp_cfg g;

static void tp_reset(void)
{
  memset(&g, 0, sizeof(g));
  g.fail_conn = -1;
  th_reset_counters();
}

static void bug(tp_cfg *cfg, const char *what, int index)
{
  int zero = 0;

  th_inc(&cfg->bugs);
  if (__atomic_compare_exchange_n(&cfg->bug_claimed, &zero, 1, false,
                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    snprintf(cfg->bug, sizeof(cfg->bug), "conn %d: %s", index, what);
}

static tp_conn *use(void *state, const char *op)
{
  tp_conn *t = state;

  if (!t || t->magic != TP_MAGIC)
    abort(); /* no state from open(), or used after close() */
  if (!pthread_equal(t->thread, pthread_self()))
    bug(t->cfg, "called outside the connection's loop thread", t->index);
  if (t->open_failed) {
    char what[64];

    snprintf(what, sizeof(what), "%s after a failed open", op);
    bug(t->cfg, what, t->index);
  }
  return t;
}

static bool chance(tp_conn *t, unsigned pct)
{
  return pct && rnd(&t->rng) % 100 < pct;
}

static bool ready(int fd, short ev)
{
  struct pollfd p = {.fd = fd, .events = ev};

  return poll(&p, 1, 0) == 1 && (p.revents & (ev | POLLERR | POLLHUP));
}

static ssize_t sock_err(void)
{
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN
                                                                   : -errno;
}

/* The connection chosen to break does so at its fail_at-th call of the
 * chosen kind, and stays broken in that direction only: the library must
 * close on the error itself, not on a later one from the other side. */
static bool breaks(tp_conn *t, int kind)
{
  tp_cfg *cfg = t->cfg;

  if (t->index != cfg->fail_conn || (cfg->fail_kind && cfg->fail_kind != kind))
    return false;
  if (t->broken)
    return true;
  if (++t->calls < cfg->fail_at)
    return false;
  t->broken = true;
  th_inc(&cfg->injected);
  return true;
}

/* A fake would-block, at most TP_EAGAIN_RUN in a row. */
static bool fake_block(tp_conn *t)
{
  if (t->eagain_run < TP_EAGAIN_RUN && chance(t, t->cfg->eagain_pct)) {
    t->eagain_run++;
    th_inc(&t->cfg->fake_eagain);
    return true;
  }
  t->eagain_run = 0;
  return false;
}

static int tp_open(gev_conn *c, void *arg, void **state)
{
  tp_cfg *cfg = arg;
  tp_conn *t = calloc(1, sizeof(*t));

  if (!t)
    return -ENOMEM;
  t->magic = TP_MAGIC;
  t->cfg = cfg;
  t->c = c;
  t->thread = pthread_self();
  t->index = __atomic_fetch_add(&cfg->next_index, 1, __ATOMIC_SEQ_CST);
  t->rng = (uint64_t)tp_seed * 0x100000001b3u + (uint64_t)t->index;
  t->fin_stalls = cfg->fin_stalls;
  if (t->index >= TP_MAX_CONNS)
    bug(cfg, "too many connections for the test's tables", t->index);
  th_inc(&cfg->opens);
  if (t->index < TP_MAX_CONNS)
    __atomic_store_n(&cfg->live[t->index], t, __ATOMIC_SEQ_CST);
  *state = t;
  gev_conn_set_context(c, t); /* the handler finds the index there */
  if (cfg->fail_odd_opens && (t->index & 1)) {
    t->open_failed = true;
    th_inc(&cfg->failed_opens);
    return -EPROTO;
  }
  return 0;
}

static void tp_close(void *state)
{
  tp_conn *t = state;

  if (!t || t->magic != TP_MAGIC)
    abort(); /* closed twice, or without open() */
  th_inc(&t->cfg->closes);
  if (t->index < TP_MAX_CONNS)
    __atomic_store_n(&t->cfg->live[t->index], NULL, __ATOMIC_SEQ_CST);
  if (t->open_failed)
    th_inc(&t->cfg->failed_closes);
  t->magic = 0;
  free(t);
}

static size_t room_of(const ringbuffer *in)
{
  size_t lim = ringbuffer_limit(in), len = ringbuffer_len(in);

  if (lim == 0)
    return SIZE_MAX;
  return lim > len ? lim - len : 0;
}

static ssize_t short_read(tp_conn *t, int fd, ringbuffer *in, size_t room)
{
  unsigned char buf[2048];
  size_t k = draw_size(&t->rng, sizeof(buf));
  ssize_t n;

  n = recv(fd, buf, k < room ? k : room, MSG_DONTWAIT);
  if (n < 0)
    return sock_err();
  if (n > 0 && ringbuffer_write(in, buf, (size_t)n) < 0) {
    bug(t->cfg, "ringbuffer_write failed within the limit", t->index);
    return -ENOMEM;
  }
  t->read_total += (size_t)n;
  t->write_blocked = false; /* the input the write waited for came in */
  th_inc(&t->cfg->shorts);
  return n;
}

/* The read must write first: it takes what it can off the socket into the
 * stash and asks for writability. */
static ssize_t read_wants_write(tp_conn *t, int fd, size_t room)
{
  size_t k = draw_size(&t->rng, sizeof(t->stash));
  ssize_t n = recv(fd, t->stash, k < room ? k : room, MSG_DONTWAIT);

  if (n == 0)
    return 0;
  if (n < 0 && sock_err() != -EAGAIN)
    return sock_err();
  if (n > 0) {
    t->stash_len = (size_t)n;
    t->read_total += (size_t)n;
    t->write_blocked = false;
    th_inc(&t->cfg->stashed);
  }
  t->read_blocked = true;
  th_inc(&t->cfg->want_write);
  return GEV_TRANSPORT_WANT_WRITE;
}

static ssize_t unstash(tp_conn *t, ringbuffer *in, size_t room)
{
  size_t n = t->stash_len < room ? t->stash_len : room;

  if (n == 0)
    return -ENOBUFS;
  if (ringbuffer_write(in, t->stash, n) < 0) {
    bug(t->cfg, "ringbuffer_write failed within the limit", t->index);
    return -ENOMEM;
  }
  memmove(t->stash, t->stash + n, t->stash_len - n);
  t->stash_len -= n;
  return (ssize_t)n;
}

static ssize_t tp_read(void *state, int fd, ringbuffer *in)
{
  tp_conn *t = use(state, "read");
  tp_cfg *cfg = t->cfg;
  size_t room = room_of(in);
  ssize_t n;

  if (breaks(t, 1))
    return -ECONNRESET;
  if (t->read_blocked) {
    if (!ready(fd, POLLOUT)) { /* retried before the socket was writable */
      th_inc(&cfg->early_read);
      return GEV_TRANSPORT_WANT_WRITE;
    }
    t->read_blocked = false;
  }
  if (t->stash_len)
    return unstash(t, in, room);
  if (room == 0) {
    th_inc(&cfg->enobufs);
    return -ENOBUFS;
  }
  if (chance(t, cfg->want_pct))
    return read_wants_write(t, fd, room);
  if (fake_block(t))
    return -EAGAIN;
  if (chance(t, cfg->short_pct))
    return short_read(t, fd, in, room);
  n = gev_transport_plain()->read(NULL, fd, in);
  if (n > 0)
    t->read_total += (size_t)n;
  if (n >= 0)
    t->write_blocked = false; /* the input the write waited for came in */
  if (n == -ENOBUFS)
    th_inc(&cfg->enobufs);
  return n;
}

/* A write may wait for readability when the socket is readable now, or
 * when the peer will send more for sure. */
static bool may_want_read(tp_conn *t, int fd)
{
  tp_cfg *cfg = t->cfg;

  if (!chance(t, cfg->want_pct))
    return false;
  if (cfg->expect_in && t->read_total < cfg->expect_in)
    return true;
  if (cfg->echo_peer && t->read_total < t->written_total)
    return true;
  return ready(fd, POLLIN);
}

/* The write side's gate, shared by write and send: true when the call
 * must answer WANT_READ. */
static bool write_waits(tp_conn *t, int fd)
{
  if (t->write_blocked) {
    if (!ready(fd, POLLIN)) { /* retried before the socket was readable */
      th_inc(&t->cfg->early_write);
      return true;
    }
    t->write_blocked = false;
    return false;
  }
  if (may_want_read(t, fd)) {
    t->write_blocked = true;
    th_inc(&t->cfg->want_read);
    return true;
  }
  return false;
}

static ssize_t short_write(tp_conn *t, int fd, ringbuffer *out)
{
  struct iovec seg[2];
  size_t k = draw_size(&t->rng, 8 * KIB);
  ssize_t w;

  if (ringbuffer_peek(out, k, seg) == 0)
    return 0;
  w = send(fd, seg[0].iov_base, seg[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0)
    return sock_err() == -EAGAIN ? 0 : sock_err();
  ringbuffer_retrieve(out, (size_t)w);
  t->written_total += (size_t)w;
  t->read_blocked = false; /* the output the read waited for went out */
  th_inc(&t->cfg->shorts);
  return w;
}

/* write_cap's script: WANT_READ once, when input is waiting (the library
 * then reads it, which is what the write waited for), else a few bytes. */
static ssize_t capped_write(tp_conn *t, int fd, ringbuffer *out)
{
  struct iovec seg[2];
  ssize_t w;

  if (t->write_blocked) {
    if (!ready(fd, POLLIN))
      return GEV_TRANSPORT_WANT_READ;
    t->write_blocked = false;
  }
  if (!t->scripted && ready(fd, POLLIN)) {
    t->scripted = t->write_blocked = true;
    th_inc(&t->cfg->want_read);
    return GEV_TRANSPORT_WANT_READ;
  }
  if (ringbuffer_peek(out, t->cfg->write_cap, seg) == 0)
    return 0;
  w = send(fd, seg[0].iov_base, seg[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0)
    return sock_err() == -EAGAIN ? 0 : sock_err();
  ringbuffer_retrieve(out, (size_t)w);
  return w;
}

static ssize_t tp_write(void *state, int fd, ringbuffer *out)
{
  tp_conn *t = use(state, "write");
  ssize_t n;

  if (t->cfg->write_cap)
    return capped_write(t, fd, out);

  if (breaks(t, 2))
    return -ECONNRESET;
  if (t->fin_sent && !ringbuffer_empty(out))
    bug(t->cfg, "write after the FIN", t->index);
  if (write_waits(t, fd))
    return GEV_TRANSPORT_WANT_READ;
  if (fake_block(t))
    return rnd(&t->rng) & 1 ? -EAGAIN : 0;
  if (chance(t, t->cfg->short_pct))
    return short_write(t, fd, out);
  n = gev_transport_plain()->write(NULL, fd, out);
  if (n > 0) {
    t->written_total += (size_t)n;
    t->read_blocked = false; /* the output the read waited for went out */
  }
  return n;
}

static ssize_t tp_send(void *state, int fd, const void *p, size_t n)
{
  tp_conn *t = use(state, "send");
  ssize_t w;

  if (breaks(t, 2))
    return -ECONNRESET;
  if (t->fin_sent && n)
    bug(t->cfg, "send after the FIN", t->index);
  if (write_waits(t, fd))
    return GEV_TRANSPORT_WANT_READ;
  if (fake_block(t))
    return rnd(&t->rng) & 1 ? -EAGAIN : 0;
  if (n && chance(t, t->cfg->short_pct)) {
    size_t k = draw_size(&t->rng, 8 * KIB);
    n = k < n ? k : n;
  }
  w = gev_transport_plain()->send(NULL, fd, p, n);
  if (w > 0) {
    t->written_total += (size_t)w;
    t->read_blocked = false;
  }
  return w;
}

static int tp_shutdown(void *state, int fd)
{
  tp_conn *t = use(state, "shutdown");
  int r;

  th_inc(&t->cfg->fin_calls);
  if (t->fin_sent)
    bug(t->cfg, "shutdown after it succeeded", t->index);
  if (t->fin_stalls > 0) {
    t->fin_stalls--;
    th_inc(&t->cfg->fin_stalled);
    return t->fin_stalls & 1 ? -EAGAIN : GEV_TRANSPORT_WANT_WRITE;
  }
  r = gev_transport_plain()->shutdown(NULL, fd);
  if (r == 0)
    t->fin_sent = true;
  return r;
}

static const gev_transport tp_table = {
    .open = tp_open,
    .read = tp_read,
    .write = tp_write,
    .send = tp_send,
    .shutdown = tp_shutdown,
    .close = tp_close,
};

static void tp_stats(const char *name)
{
  printf("%s seed %u: opens %d closes %d shorts %d eagain %d want_read %d "
         "want_write %d stashed %d enobufs %d early_read %d early_write %d "
         "fin %d/%d stalled injected %d bugs %d\n",
         name, tp_seed, th_ld(&g.opens), th_ld(&g.closes), th_ld(&g.shorts),
         th_ld(&g.fake_eagain), th_ld(&g.want_read), th_ld(&g.want_write),
         th_ld(&g.stashed), th_ld(&g.enobufs), th_ld(&g.early_read),
         th_ld(&g.early_write), th_ld(&g.fin_calls), th_ld(&g.fin_stalled),
         th_ld(&g.injected), th_ld(&g.bugs));
  fflush(stdout);
}

/* Prints the connections of the loop it runs in: the transport's view and
 * the library's. A task (th_run_in_loop), so that it reads them safely. */
static void dump_loop(void *arg)
{
  (void)arg;
  for (int i = 0; i < TP_MAX_CONNS; i++) {
    tp_conn *t = __atomic_load_n(&g.live[i], __ATOMIC_SEQ_CST);
    gev_conn *c;

    if (!t || !pthread_equal(t->thread, pthread_self()))
      continue;
    c = t->c;
    printf(
        "  conn %d: read %zu wrote %zu stash %zu read_blocked %d "
        "write_blocked %d | state %d flags %#x interest %#x in %zu out %zu\n",
        i, t->read_total, t->written_total, t->stash_len, t->read_blocked,
        t->write_blocked, gev__conn_state(c), c->flags, c->io.interest,
        c->in ? ringbuffer_len(c->in) : 0, c->out ? ringbuffer_len(c->out) : 0);
  }
  fflush(stdout);
}

static void dump_server(th_server *srv)
{
  for (int i = 0; i < gev_server_num_loops(srv->s); i++)
    th_run_in_loop(gev_server_worker_loop(srv->s, i), dump_loop, NULL);
}

/* The end of every test: the transport saw no breach and every state it
 * handed out was released. Call after th_stop (the server's loops are
 * done). */
static void tp_check_end(int want_opens)
{
  TP_CHECK(th_ld(&g.bugs) == 0, "transport contract breached %d times: %s",
           th_ld(&g.bugs), g.bug);
  TP_CHECK(th_ld(&g.opens) == want_opens, "%d opens, want %d", th_ld(&g.opens),
           want_opens);
  TP_CHECK(th_ld(&g.closes) == th_ld(&g.opens),
           "%d transport states opened, %d closed", th_ld(&g.opens),
           th_ld(&g.closes));
  TP_CHECK(th_ld(&th_violations) == 0, "echo output refused %d times",
           th_ld(&th_violations));
  /* A retry before the socket is ready in the direction asked for is
   * harmless now and then (a pass that writes replies anyway), but a
   * library that ignores the wait retries on every event: a busy loop. */
  TP_CHECK(th_ld(&g.early_write) <= 2 * th_ld(&g.want_read) + 8,
           "writes retried %d times before the socket was readable, after "
           "%d WANT_READ: the wait is ignored",
           th_ld(&g.early_write), th_ld(&g.want_read));
  TP_CHECK(th_ld(&g.early_read) <= 2 * th_ld(&g.want_write) + 8,
           "reads retried %d times before the socket was writable, after "
           "%d WANT_WRITE: the wait is ignored",
           th_ld(&g.early_read), th_ld(&g.want_write));
}

/* ---- the handlers ------------------------------------------------------- */

static int conn_index(gev_conn *c)
{
  tp_conn *t = gev_conn_context(c);

  return t && t->index >= 0 && t->index < TP_MAX_CONNS ? t->index : -1;
}

static void tp_on_connect(gev_conn *c)
{
  int i = conn_index(c);

  th_inc(&th_connects);
  if (i >= 0)
    th_inc(&g.on_connects[i]);
}

static void tp_on_close(gev_conn *c)
{
  int i = conn_index(c);

  th_inc(&th_closes);
  if (i >= 0)
    th_inc(&g.on_closes[i]);
}

static const gev_handler tp_echo = {.on_connect = tp_on_connect,
                                    .on_message = th_echo_msg,
                                    .on_close = tp_on_close};

static th_server *tp_server(const gev_handler *h, int loops, size_t max_buffer)
{
  gev_options opt = {.num_loops = loops,
                     .max_buffer = max_buffer,
                     .transport = &tp_table,
                     .transport_arg = &g};

  return th_start(h, &opt);
}

/* One connection's callbacks ran once each, or never. */
static void check_once(int i, int want)
{
  TP_CHECK(th_ld(&g.on_connects[i]) == want, "conn %d: on_connect ran %d times",
           i, th_ld(&g.on_connects[i]));
  TP_CHECK(th_ld(&g.on_closes[i]) == want, "conn %d: on_close ran %d times", i,
           th_ld(&g.on_closes[i]));
}

/* ---- blocking-client helpers -------------------------------------------- */

/* Reads n bytes and compares them with p: "" or what went wrong. */
static const char *read_expect(int fd, const unsigned char *p, size_t n)
{
  static char why[128];
  unsigned char buf[16 * KIB];
  size_t got = 0;

  while (got < n) {
    size_t k = n - got < sizeof(buf) ? n - got : sizeof(buf);
    ssize_t r = recv(fd, buf, k, 0);

    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      snprintf(why, sizeof(why), "%s after %zu of %zu bytes",
               r == 0 ? "EOF" : strerror(errno), got, n);
      return why;
    }
    if (memcmp(buf, p + got, (size_t)r) != 0) {
      snprintf(why, sizeof(why), "wrong bytes at %zu..%zu", got,
               got + (size_t)r);
      return why;
    }
    got += (size_t)r;
  }
  return "";
}

/* An orderly EOF within timeout_ms: a reset is not one. */
static bool clean_eof(int fd, int timeout_ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char c;

  if (poll(&p, 1, timeout_ms) != 1)
    return false;
  return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

/* ---- 1. echo through the faulty transport ------------------------------- */

#define ECHO_CLIENTS 8
#define ECHO_BYTES MIB

typedef struct echo_client {
  int fd;
  unsigned char *want;
  size_t sent, got;
  int pause; /* poll rounds left without reading: the output backs up */
} echo_client;

/* Non-blocking: sends as long as the server takes, reads the echo as it
 * comes, pausing its reads now and then. "" or what went wrong. */
static const char *echo_step(echo_client *e, short revents, uint64_t *rng)
{
  static char why[160];
  unsigned char buf[64 * KIB];

  if ((revents & POLLOUT) && e->sent < ECHO_BYTES) {
    size_t k = 1 + (size_t)(rnd(rng) % (64 * KIB));
    ssize_t w;

    if (k > ECHO_BYTES - e->sent)
      k = ECHO_BYTES - e->sent;
    w = send(e->fd, e->want + e->sent, k, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
      snprintf(why, sizeof(why), "send: %s after %zu bytes", strerror(errno),
               e->sent);
      return why;
    }
    if (w > 0)
      e->sent += (size_t)w;
  }
  if (e->pause > 0) {
    e->pause--;
    return "";
  }
  if (rnd(rng) % 64 == 0)
    e->pause = 1 + (int)(rnd(rng) % 20);
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    size_t k = 1 + (size_t)(rnd(rng) % sizeof(buf));
    ssize_t r = recv(e->fd, buf, k, MSG_DONTWAIT);

    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return "";
    if (r <= 0) {
      snprintf(why, sizeof(why), "%s after %zu echoed bytes",
               r == 0 ? "EOF" : strerror(errno), e->got);
      return why;
    }
    if (e->got + (size_t)r > e->sent ||
        memcmp(buf, e->want + e->got, (size_t)r) != 0) {
      snprintf(why, sizeof(why), "wrong echo at %zu..%zu (sent %zu)", e->got,
               e->got + (size_t)r, e->sent);
      return why;
    }
    e->got += (size_t)r;
  }
  return "";
}

static bool echo_clients(int port, echo_client *ec, int n)
{
  struct pollfd p[ECHO_CLIENTS];
  uint64_t rng = tp_seed, end = th_now_ms() + 60000;
  int done = 0;

  for (int i = 0; i < n; i++) {
    int rcv = 32 * KIB;

    ec[i].fd = th_connect(port);
    TP_CHECK(ec[i].fd >= 0, "client %d: connect failed", i);
    setsockopt(ec[i].fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    fcntl(ec[i].fd, F_SETFL, fcntl(ec[i].fd, F_GETFL) | O_NONBLOCK);
    ec[i].want = malloc(ECHO_BYTES);
    ck_assert_ptr_nonnull(ec[i].want);
    th_fill(ec[i].want, ECHO_BYTES, tp_seed * 31u + (unsigned)i);
  }
  while (done < n && th_now_ms() < end) {
    for (int i = 0; i < n; i++) {
      p[i].fd = ec[i].got < ECHO_BYTES ? ec[i].fd : -1;
      p[i].events = POLLIN | (ec[i].sent < ECHO_BYTES ? POLLOUT : 0);
      p[i].revents = 0;
    }
    if (poll(p, (nfds_t)n, 5) < 0)
      continue;
    done = 0;
    for (int i = 0; i < n; i++) {
      const char *why = "";

      /* A paused client counts down in rounds even without events. */
      if (ec[i].got < ECHO_BYTES)
        why = echo_step(&ec[i], p[i].revents, &rng);
      TP_CHECK(why[0] == '\0', "client %d: %s", i, why);
      done += ec[i].got == ECHO_BYTES;
    }
  }
  return done == n;
}

static void echo_run(unsigned seed)
{
  echo_client ec[ECHO_CLIENTS] = {{0}};
  th_server *srv;

  tp_reset();
  tp_seed = seed;
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.want_pct = 5;
  g.expect_in = ECHO_BYTES; /* the client sends it all, echo or not */
  srv = tp_server(&tp_echo, 2, 64 * KIB);
  if (!echo_clients(srv->port, ec, ECHO_CLIENTS)) {
    dump_server(srv);
    for (int i = 0; i < ECHO_CLIENTS; i++)
      TP_CHECK(ec[i].got == ECHO_BYTES,
               "client %d: %zu of %u bytes echoed in 60 s (sent %zu)", i,
               ec[i].got, ECHO_BYTES, ec[i].sent);
  }
  TP_CHECK(th_wait_int(&th_connects, ECHO_CLIENTS, 10000), "%d on_connect",
           th_ld(&th_connects));
  TP_CHECK(th_ld(&th_closes) == 0,
           "on_close ran %d times before the "
           "clients closed",
           th_ld(&th_closes));
  for (int i = 0; i < ECHO_CLIENTS; i++) {
    close(ec[i].fd);
    free(ec[i].want);
  }
  TP_CHECK(th_wait_int(&th_closes, ECHO_CLIENTS, 10000),
           "%d of %d on_close after the clients closed", th_ld(&th_closes),
           ECHO_CLIENTS);
  th_stop(srv);
  tp_stats("echo");
  for (int i = 0; i < ECHO_CLIENTS; i++)
    check_once(i, 1);
  tp_check_end(ECHO_CLIENTS);
  /* The faults were drawn (else this tested the plain path only). */
  TP_CHECK(th_ld(&g.shorts) > 0 && th_ld(&g.fake_eagain) > 0 &&
               th_ld(&g.want_read) > 0 && th_ld(&g.want_write) > 0 &&
               th_ld(&g.stashed) > 0,
           "some fault was never drawn");
}

START_TEST(echo_through_faulty_transport_1)
{
  echo_run(base_seed(1));
}
END_TEST

START_TEST(echo_through_faulty_transport_2)
{
  echo_run(base_seed(1002));
}
END_TEST

START_TEST(echo_through_faulty_transport_3)
{
  echo_run(base_seed(2003));
}
END_TEST

/* ---- 2. an outgoing connection through the transport -------------------- */

#define OUT_BYTES MIB
#define OUT_WINDOW (64 * KIB) /* in flight at most */

static struct {
  unsigned char *want;
  size_t sent, got;
  uint64_t rng;
  int result, results, connects, closes, done, errors;
  char why[128];
} oc;

/* Sends the next chunks while less than the window is in flight, through
 * gev_conn_send (the transport's send, when nothing is queued) or, inside
 * on_message, through `out` as well. */
static void out_push(gev_conn *c, ringbuffer *out)
{
  while (oc.sent < OUT_BYTES && oc.sent - oc.got < OUT_WINDOW) {
    size_t k = 1 + (size_t)(rnd(&oc.rng) % (16 * KIB));
    int r;

    if (k > OUT_BYTES - oc.sent)
      k = OUT_BYTES - oc.sent;
    if (out && (rnd(&oc.rng) & 1))
      r = ringbuffer_write(out, oc.want + oc.sent, k);
    else
      r = gev_conn_send(c, oc.want + oc.sent, k);
    if (r < 0) {
      th_inc(&oc.errors);
      return;
    }
    oc.sent += k;
  }
}

static void out_connect(gev_conn *c)
{
  th_inc(&oc.connects);
  out_push(c, NULL);
}

static void out_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  unsigned char buf[16 * KIB];
  size_t n;

  while ((n = ringbuffer_read(in, buf, sizeof(buf))) > 0) {
    if (oc.got + n > oc.sent || memcmp(buf, oc.want + oc.got, n) != 0) {
      if (!oc.why[0])
        snprintf(oc.why, sizeof(oc.why), "wrong echo at %zu..%zu", oc.got,
                 oc.got + n);
      th_inc(&oc.errors);
      gev_conn_close(c);
      return;
    }
    oc.got += n;
  }
  if (oc.got == OUT_BYTES) {
    th_st(&oc.done, 1);
    gev_conn_close(c);
    return;
  }
  out_push(c, out);
}

static void out_close(gev_conn *c)
{
  (void)c;
  th_inc(&oc.closes);
}

static void out_result(gev_conn *c, int err, void *arg)
{
  (void)c;
  (void)arg;
  oc.result = err;
  th_inc(&oc.results);
}

START_TEST(outgoing_through_faulty_transport)
{
  gev_options sopt = {.num_loops = 1};
  gev_handler h = {
      .on_connect = out_connect, .on_message = out_msg, .on_close = out_close};
  gev_connect_options co = {.timeout_ms = 5000,
                            .on_result = out_result,
                            .transport = &tp_table,
                            .transport_arg = &g};
  th_loop_thread lt;
  th_server *srv;
  char addr[64];

  tp_reset();
  tp_seed = base_seed(4);
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.want_pct = 15;    /* fewer calls than the server's: more often */
  g.echo_peer = true; /* what the client wrote comes back */
  memset(&oc, 0, sizeof(oc));
  oc.rng = tp_seed;
  oc.want = malloc(OUT_BYTES);
  ck_assert_ptr_nonnull(oc.want);
  th_fill(oc.want, OUT_BYTES, tp_seed);
  srv = th_start(&th_echo_handler, &sopt);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv->port);
  co.address = addr;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &co), 0);
  TP_CHECK(th_wait_int(&oc.done, 1, 60000),
           "%zu of %u bytes came back in 60 s (sent %zu, result %d, %d errors: "
           "%s)",
           oc.got, OUT_BYTES, oc.sent, oc.result, th_ld(&oc.errors), oc.why);
  TP_CHECK(th_wait_int(&oc.closes, 1, 10000), "no on_close after the close");
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  TP_CHECK(th_wait_int(&th_closes, 1, 10000), "the server saw no close");
  th_stop(srv);
  tp_stats("outgoing");
  TP_CHECK(oc.results == 1 && oc.result == 0, "%d results, last %d", oc.results,
           oc.result);
  TP_CHECK(oc.connects == 1 && oc.closes == 1, "%d on_connect, %d on_close",
           oc.connects, oc.closes);
  TP_CHECK(th_ld(&oc.errors) == 0, "%d errors: %s", th_ld(&oc.errors), oc.why);
  tp_check_end(1);
  TP_CHECK(th_ld(&g.shorts) > 0 && th_ld(&g.want_read) > 0 &&
               th_ld(&g.want_write) > 0,
           "some fault was never drawn");
  free(oc.want);
}
END_TEST

/* ---- 3. half close: FIN after the reply, reading goes on ---------------- */

#define HC_REPLY (256 * KIB)
#define HC_AFTER 1000

static unsigned char *hc_reply;
static int hc_shut_ret, hc_replied, hc_after;

/* "GO\n": the reply, then our FIN. Afterwards: counts what arrives. */
static void hc_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  if (th_ld(&hc_replied)) {
    __atomic_fetch_add(&hc_after, (int)ringbuffer_len(in), __ATOMIC_SEQ_CST);
    ringbuffer_retrieve_all(in);
    return;
  }
  if (ringbuffer_find(in, "\n", 1) < 0)
    return;
  ringbuffer_retrieve_all(in);
  if (ringbuffer_write(out, hc_reply, HC_REPLY) < 0)
    th_inc(&th_violations);
  hc_shut_ret = gev_conn_shutdown_write(c);
  th_st(&hc_replied, 1);
}

static const gev_handler hc_handler = {
    .on_connect = tp_on_connect, .on_message = hc_msg, .on_close = tp_on_close};

static void probe_closes(void *arg)
{
  *(int *)arg = th_ld(&th_closes);
}

START_TEST(half_close_through_transport)
{
  unsigned char junk[HC_AFTER];
  th_server *srv;
  const char *why;
  int fd, seen = -1;

  tp_reset();
  tp_seed = base_seed(5);
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.want_pct = 5;
  g.fin_stalls = 3; /* -EAGAIN, WANT_WRITE, -EAGAIN, then the FIN */
  hc_replied = hc_after = 0;
  hc_shut_ret = 1;
  hc_reply = malloc(HC_REPLY);
  ck_assert_ptr_nonnull(hc_reply);
  th_fill(hc_reply, HC_REPLY, tp_seed);
  srv = tp_server(&hc_handler, 1, 0);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "GO\n", 3));
  why = read_expect(fd, hc_reply, HC_REPLY);
  TP_CHECK(why[0] == '\0', "reply: %s", why);
  TP_CHECK(clean_eof(fd, 10000),
           "no FIN after the reply (%d shutdown calls, "
           "%d stalled)",
           th_ld(&g.fin_calls), th_ld(&g.fin_stalled));
  TP_CHECK(hc_shut_ret == 0, "gev_conn_shutdown_write: %d", hc_shut_ret);
  TP_CHECK(th_ld(&g.fin_stalled) == 3 && th_ld(&g.fin_calls) == 4,
           "shutdown called %d times (%d stalled), want 4 (3)",
           th_ld(&g.fin_calls), th_ld(&g.fin_stalled));
  /* Half closed: the client still sends, the server still reads. */
  th_fill(junk, sizeof(junk), tp_seed + 1);
  ck_assert(th_write_all(fd, junk, sizeof(junk)));
  TP_CHECK(th_wait_int(&hc_after, HC_AFTER, 10000),
           "server read %d of %d bytes after its FIN", th_ld(&hc_after),
           HC_AFTER);
  th_run_in_loop(gev_server_worker_loop(srv->s, 0), probe_closes, &seen);
  TP_CHECK(seen == 0, "on_close ran before the client closed");
  close(fd);
  TP_CHECK(th_wait_int(&th_closes, 1, 10000), "no on_close after the client "
                                              "closed");
  th_stop(srv);
  tp_stats("half_close");
  check_once(0, 1);
  tp_check_end(1);
  free(hc_reply);
}
END_TEST

/* ---- 4. lingering close ------------------------------------------------- */

#define LG_REPLY (64 * KIB)
#define LG_LINGER_MS 5000

static unsigned char *lg_reply;
static int lg_ret, lg_msgs;

static void lg_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  th_inc(&lg_msgs);
  if (ringbuffer_find(in, "\n", 1) < 0)
    return;
  ringbuffer_retrieve_all(in);
  if (ringbuffer_write(out, lg_reply, LG_REPLY) < 0)
    th_inc(&th_violations);
  lg_ret = gev_conn_close_lingering(c, LG_LINGER_MS);
}

static const gev_handler lg_handler = {
    .on_connect = tp_on_connect, .on_message = lg_msg, .on_close = tp_on_close};

START_TEST(lingering_close_through_transport)
{
  unsigned char junk[4 * KIB];
  th_server *srv;
  const char *why;
  uint64_t t0;
  int fd, msgs;

  tp_reset();
  tp_seed = base_seed(6);
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.want_pct = 5;
  g.fin_stalls = 2;
  lg_ret = 1;
  lg_msgs = 0;
  lg_reply = malloc(LG_REPLY);
  ck_assert_ptr_nonnull(lg_reply);
  th_fill(lg_reply, LG_REPLY, tp_seed);
  srv = tp_server(&lg_handler, 1, 0);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "GO\n", 3));
  why = read_expect(fd, lg_reply, LG_REPLY);
  TP_CHECK(why[0] == '\0', "reply: %s", why);
  TP_CHECK(clean_eof(fd, 10000), "no FIN after the reply");
  TP_CHECK(lg_ret == 0, "gev_conn_close_lingering: %d", lg_ret);
  msgs = th_ld(&lg_msgs);
  /* The server lingers: what the client sends now is read and dropped, not
   * answered with a reset. */
  th_fill(junk, sizeof(junk), tp_seed + 1);
  for (int i = 0; i < 40; i++) {
    TP_CHECK(th_write_all(fd, junk, sizeof(junk)),
             "send %d after the FIN failed: %s", i, strerror(errno));
    usleep(10000);
  }
  TP_CHECK(clean_eof(fd, 1000), "a reset, not the FIN, after sending on");
  TP_CHECK(th_ld(&th_closes) == 0, "on_close before the client closed");
  TP_CHECK(th_ld(&lg_msgs) == msgs, "on_message while lingering");
  t0 = th_now_ms();
  close(fd);
  TP_CHECK(th_wait_int(&th_closes, 1, 10000), "no on_close");
  TP_CHECK(th_now_ms() - t0 < LG_LINGER_MS / 2,
           "on_close only at the linger deadline (%llu ms)",
           (unsigned long long)(th_now_ms() - t0));
  th_stop(srv);
  tp_stats("lingering");
  check_once(0, 1);
  TP_CHECK(th_ld(&g.fin_stalled) == 2, "FIN stalled %d times, want 2",
           th_ld(&g.fin_stalled));
  tp_check_end(1);
  free(lg_reply);
}
END_TEST

/* ---- 4b. a write's wait for input, ended by a read ---------------------- */

/* The reply goes out 16 bytes a write. The client sends one more byte
 * while it streams; the first write that finds it waiting says WANT_READ.
 * The library reads it (in the same event, or on the readable one), which
 * is all the write waited for: the rest of the reply must follow without
 * any further input, which the client never sends.
 *
 * Regression test for a bug this file found: the connection kept
 * GEV__CF_WRITE_WANTS_READ set when a later write succeeded. io_cb ran
 * handle_read right after the handle_write that set it; keep() then wrote
 * directly (the interest no longer had EV_WRITE) and succeeded, the flag
 * stayed, write interest stayed off, and the rest of the output waited for
 * a readable event that the read had already used up: the reply stalled
 * for good. A write tried again now clears the flag (tp_write). */
#define WW_REPLY MIB

static unsigned char *ww_reply;
static int ww_replied;

static void ww_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  if (!th_ld(&ww_replied) && ringbuffer_find(in, "\n", 1) >= 0) {
    if (ringbuffer_write(out, ww_reply, WW_REPLY) < 0)
      th_inc(&th_violations);
    th_st(&ww_replied, 1);
  }
  ringbuffer_retrieve_all(in);
}

static const gev_handler ww_handler = {
    .on_connect = tp_on_connect, .on_message = ww_msg, .on_close = tp_on_close};

START_TEST(write_wait_ended_by_read)
{
  unsigned char buf[16 * KIB];
  th_server *srv;
  uint64_t t0, end;
  size_t got = 0;
  unsigned pokes = 0;
  int fd;

  tp_reset();
  tp_seed = base_seed(10);
  g.write_cap = 16;
  ww_replied = 0;
  ww_reply = malloc(WW_REPLY);
  ck_assert_ptr_nonnull(ww_reply);
  th_fill(ww_reply, WW_REPLY, tp_seed);
  srv = tp_server(&ww_handler, 1, 0);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "GO\n", 3));
  t0 = th_now_ms();
  end = t0 + 10000;
  while (got < WW_REPLY && th_now_ms() < end) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t r;

    /* A byte every 5 ms until a write has found one waiting; then no
     * more input, ever. */
    if (th_ld(&g.want_read) == 0 && th_now_ms() - t0 >= 5u * (pokes + 1u)) {
      ck_assert(th_write_all(fd, "y", 1));
      pokes++;
    }
    if (poll(&p, 1, 5) != 1)
      continue;
    r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r <= 0)
      break;
    TP_CHECK(memcmp(buf, ww_reply + got, (size_t)r) == 0,
             "wrong reply bytes at %zu", got);
    got += (size_t)r;
  }
  if (got < WW_REPLY)
    dump_server(srv);
  TP_CHECK(got == WW_REPLY,
           "%zu of %u reply bytes in 10 s: the write still waits for input "
           "that was read already (%d WANT_READ)",
           got, WW_REPLY, th_ld(&g.want_read));
  TP_CHECK(th_ld(&g.want_read) == 1,
           "the write never found input waiting (%d WANT_READ): inconclusive",
           th_ld(&g.want_read));
  close(fd);
  TP_CHECK(th_wait_int(&th_closes, 1, 10000), "no on_close");
  th_stop(srv);
  check_once(0, 1);
  tp_check_end(1);
  free(ww_reply);
}
END_TEST

/* ---- 5. a transport error closes its connection only -------------------- */

static void error_run(int kind)
{
  th_server *srv;
  uint64_t rng;
  bool broke = false;
  int a, b, i;

  tp_reset();
  tp_seed = base_seed(7) + (unsigned)kind;
  rng = tp_seed;
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.want_pct = 5;
  g.fail_conn = 0;
  g.fail_kind = kind;
  g.fail_at = 2 + (int)(rnd(&rng) % 10);
  srv = tp_server(&tp_echo, 1, 0); /* one loop: both on it */
  a = th_connect(srv->port);
  ck_assert_int_ge(a, 0);
  TP_CHECK(th_wait_int(&g.opens, 1, 10000), "first open");
  b = th_connect(srv->port);
  ck_assert_int_ge(b, 0);
  TP_CHECK(th_wait_int(&th_connects, 2, 10000), "on_connect: %d",
           th_ld(&th_connects));
  /* a echoes until its connection breaks (it sees EOF or a reset). */
  for (i = 0; i < 500 && !broke; i++)
    broke = !th_echo_roundtrip(a, 1 + (size_t)(rnd(&rng) % (8 * KIB)),
                               tp_seed + (unsigned)i);
  TP_CHECK(broke, "connection 0 survived %d round trips (fail_at %d)", i,
           g.fail_at);
  TP_CHECK(th_ld(&g.injected) == 1, "%d errors injected", th_ld(&g.injected));
  TP_CHECK(th_wait_int(&g.on_closes[0], 1, 10000),
           "no on_close for the broken connection");
  /* b, on the same loop, goes on. */
  for (i = 0; i < 20; i++)
    TP_CHECK(th_echo_roundtrip(b, 1 + (size_t)(rnd(&rng) % (64 * KIB)),
                               tp_seed + 100u + (unsigned)i),
             "round trip %d on the healthy connection failed", i);
  TP_CHECK(th_ld(&g.on_closes[1]) == 0, "the healthy connection closed");
  close(a);
  close(b);
  TP_CHECK(th_wait_int(&th_closes, 2, 10000), "%d on_close", th_ld(&th_closes));
  th_stop(srv);
  tp_stats(kind == 1 ? "error_on_read" : "error_on_write");
  check_once(0, 1);
  check_once(1, 1);
  tp_check_end(2);
}

START_TEST(transport_error_closes_one)
{
  error_run(1); /* the Nth read fails */
  error_run(2); /* the Nth write (or send) fails */
}
END_TEST

/* ---- 6. open() fails ---------------------------------------------------- */

/* Regression test for a bug this file found (seen under ASan and
 * valgrind): server.c's start_task read c->server and c->loop after a
 * failed gev__conn_start had freed c, a use after free on every failed
 * open. */

#define OF_CLIENTS 6

START_TEST(open_failure)
{
  int fd[OF_CLIENTS];
  th_server *srv;

  tp_reset();
  tp_seed = base_seed(8);
  g.short_pct = 30;
  g.eagain_pct = 10;
  g.fail_odd_opens = true;
  srv = tp_server(&tp_echo, 2, 0);
  /* One at a time, so that the open order is the connect order. */
  for (int i = 0; i < OF_CLIENTS; i++) {
    fd[i] = th_connect(srv->port);
    ck_assert_int_ge(fd[i], 0);
    TP_CHECK(th_wait_int(&g.opens, i + 1, 10000), "open %d", i);
  }
  for (int i = 0; i < OF_CLIENTS; i++) {
    if (i & 1)
      TP_CHECK(clean_eof(fd[i], 10000),
               "client %d: not closed after the "
               "failed open",
               i);
    else
      TP_CHECK(th_echo_roundtrip(fd[i], 64 * KIB, tp_seed + (unsigned)i),
               "client %d: no echo", i);
  }
  TP_CHECK(th_ld(&th_connects) == OF_CLIENTS / 2, "%d on_connect",
           th_ld(&th_connects));
  TP_CHECK(gev_server_conn_count(srv->s) == OF_CLIENTS / 2,
           "%d connections counted", gev_server_conn_count(srv->s));
  for (int i = 0; i < OF_CLIENTS; i++)
    close(fd[i]);
  TP_CHECK(th_wait_int(&th_closes, OF_CLIENTS / 2, 10000), "%d on_close",
           th_ld(&th_closes));
  th_stop(srv);
  tp_stats("open_failure");
  for (int i = 0; i < OF_CLIENTS; i++)
    check_once(i, !(i & 1));
  TP_CHECK(th_ld(&th_closes) == OF_CLIENTS / 2, "%d on_close",
           th_ld(&th_closes));
  TP_CHECK(th_ld(&g.failed_opens) == OF_CLIENTS / 2 &&
               th_ld(&g.failed_closes) == OF_CLIENTS / 2,
           "%d failed opens, %d of them closed", th_ld(&g.failed_opens),
           th_ld(&g.failed_closes));
  tp_check_end(OF_CLIENTS);
}
END_TEST

static Suite *transport_suite(void)
{
  const th_case cases[] = {
      {"echo_through_faulty_transport_1", echo_through_faulty_transport_1, 90},
      {"echo_through_faulty_transport_2", echo_through_faulty_transport_2, 90},
      {"echo_through_faulty_transport_3", echo_through_faulty_transport_3, 90},
      {"outgoing_through_faulty_transport", outgoing_through_faulty_transport,
       90},
      {"half_close_through_transport", half_close_through_transport, 30},
      {"lingering_close_through_transport", lingering_close_through_transport,
       30},
      {"write_wait_ended_by_read", write_wait_ended_by_read, 30},
      {"transport_error_closes_one", transport_error_closes_one, 60},
      {"open_failure", open_failure, 30},
  };

  return th_suite("transport", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(transport_suite());
}
