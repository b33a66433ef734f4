/* fuzz-conn.c - a stateful fuzzer of the connection layer: the input is a
 * script for a peer of up to four connections (two over TCP loopback, two
 * over a unix socket) against gev servers whose handler acts at random
 * (its choices drawn from the input's first 8 bytes): consume all, some
 * or none; echo or reply; close, close lingering, half-close; pause and
 * resume reading; and a thread of the peer's side sends to the server's
 * connections with gev_conn_send (cross-thread). Script ops: connect,
 * write N bytes, shutdown, reset (SO_LINGER 0), close, read, pause,
 * cross-thread send. After each input every peer socket is reset and the
 * servers must reach zero connections with one on_close per on_connect;
 * anything else aborts (a crash the fuzzer keeps), as ASan/UBSan do. */
#include <gev/gev.h>

#include "loop-internal.h"
#include "server-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { PEERS = 4, REG = 64 };

typedef struct conn_state {
  uint64_t rng;
  int closes;
  int nlog;
  char log[48]; /* the handler's last choices, printed when one hangs */
} conn_state;

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static conn_state *open_states[1024];

static void note(conn_state *s, char what)
{
  s->log[s->nlog++ % (int)(sizeof(s->log) - 1)] = what;
}

static void track(conn_state *s, bool add)
{
  pthread_mutex_lock(&open_mu);
  for (int i = 0; i < 1024; i++)
    if (add ? !open_states[i] : open_states[i] == s) {
      open_states[i] = add ? s : NULL;
      break;
    }
  pthread_mutex_unlock(&open_mu);
}

static void print_open(void)
{
  pthread_mutex_lock(&open_mu);
  for (int i = 0; i < 1024; i++)
    if (open_states[i])
      fprintf(stderr, "  open: handler log %s\n", open_states[i]->log);
  pthread_mutex_unlock(&open_mu);
}

static gev_server *srv[2];
static char unix_path[64];
static int tcp_port;
static uint64_t handler_seed;
static atomic_int connects, closes, bad;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static gev_conn *reg[REG]; /* referenced server-side connections */

static uint64_t next(uint64_t *x)
{
  *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
  return *x;
}

static void free_state(void *p)
{
  free(p);
}

static void on_connect(gev_conn *c)
{
  conn_state *s = calloc(1, sizeof(*s));

  if (!s)
    abort();
  s->rng = handler_seed ^ (uint64_t)atomic_fetch_add(&connects, 1) * 977u;
  s->rng |= 1;
  gev_conn_set_context(c, s);
  gev_conn_set_context_free(c, free_state);
  track(s, true);
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < REG; i++)
    if (!reg[i]) {
      gev_conn_ref(c);
      reg[i] = c;
      break;
    }
  pthread_mutex_unlock(&reg_mu);
}

static void on_close(gev_conn *c)
{
  conn_state *s = gev_conn_context(c);

  if (!s || s->closes++)
    atomic_fetch_add(&bad, 1);
  else
    track(s, false);
  atomic_fetch_add(&closes, 1);
}

static void resume(void *arg)
{
  gev_conn_resume_read(arg);
  gev_conn_unref(arg);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  conn_state *s = gev_conn_context(c);
  uint64_t r = next(&s->rng);
  size_t n = ringbuffer_len(in);

  note(s, (char)('a' + r % 16));
  switch (r % 16) {
  case 0: /* leave everything for later */ break;
  case 1: ringbuffer_retrieve(in, n / 2 + 1 > n ? n : n / 2 + 1); break;
  case 2:
    ringbuffer_write(out, "reply\n", 6);
    ringbuffer_retrieve_all(in);
    break;
  case 3: gev_conn_close(c); break;
  case 4:
    gev_conn_shutdown_write(c);
    ringbuffer_retrieve_all(in);
    break;
  case 5: gev_conn_close_lingering(c, 50); break;
  case 6: /* pause, and resume 1-4 ms later (a paused connection does
           * not see the peer's FIN: it must not stay paused for good) */
    if (gev_conn_pause_read(c) == 0) {
      gev_conn_ref(c);
      if (!gev_loop_run_after(gev_conn_loop(c), 1 + (r >> 8) % 4, resume, c))
        resume(c);
    }
    break;
  case 7:
    gev_conn_resume_read(c);
    ringbuffer_retrieve_all(in);
    break;
  case 8:
    gev_conn_send(c, "direct", 6); /* in the loop's thread: direct */
    ringbuffer_retrieve_all(in);
    break;
  default: { /* echo what fits */
    size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);
    ringbuffer_move(out, in, lim > used ? lim - used : 0);
  }
  }
}

static void on_peer_eof(gev_conn *c)
{
  conn_state *s = gev_conn_context(c);

  note(s, 'E');
  /* Half-open until the handler ends it: it always does, at once or
   * after a last word. */
  if (next(&s->rng) % 2)
    gev_conn_send(c, "bye", 3);
  gev_conn_shutdown_write(c);
}

static const gev_handler handler = {
    .on_connect = on_connect,
    .on_message = on_message,
    .on_close = on_close,
    .on_peer_eof = on_peer_eof,
};

static void *serve(void *arg)
{
  gev_server_start(arg);
  return NULL;
}

static void log_line(gev_log_level level, const char *msg, void *arg)
{
  (void)arg;
  if (level <= GEV_LOG_WARN)
    fprintf(stderr, "gev: %s\n", msg);
}

static void setup(void)
{
  gev_options o = {
      .address = "127.0.0.1:0", .num_loops = 2, .max_buffer = 256 * 1024};
  pthread_t t;

  gev_set_logger(log_line, GEV_LOG_WARN, NULL);
  snprintf(unix_path, sizeof(unix_path), "/tmp/gev-fuzz-conn-%d.sock",
           (int)getpid());
  unlink(unix_path);
  if (gev_server_new(&srv[0], &handler, &o) < 0)
    abort();
  tcp_port = gev_server_port(srv[0]);
  char addr[80];
  snprintf(addr, sizeof(addr), "unix:%s", unix_path);
  o.address = addr;
  o.num_loops = 1;
  if (gev_server_new(&srv[1], &handler, &o) < 0)
    abort();
  for (int i = 0; i < 2; i++)
    if (pthread_create(&t, NULL, serve, srv[i]) != 0 || pthread_detach(t))
      abort();
}

static int dial(int i)
{
  int fd;

  if (i % 2 == 0) {
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)tcp_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
        errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
  } else {
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    snprintf(su.sun_path, sizeof(su.sun_path), "%s", unix_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&su, sizeof(su)) < 0 &&
        errno != EINPROGRESS && errno != EAGAIN) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

/* A reset for TCP (no TIME_WAIT left behind either), a close for unix. */
static void reset(int fd)
{
  struct linger l = {.l_onoff = 1, .l_linger = 0};

  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

static void drain(int fd)
{
  char buf[65536];

  while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
    ;
}

/* From this (the peer's) thread: every send crosses to the loop. */
static void cross_send(unsigned pick, size_t n)
{
  static char buf[4096];
  gev_conn *c;

  pthread_mutex_lock(&reg_mu);
  c = reg[pick % REG];
  if (c)
    gev_conn_ref(c);
  pthread_mutex_unlock(&reg_mu);
  if (!c)
    return;
  gev_conn_send(c, buf, n % sizeof(buf));
  if (pick & 0x100)
    gev_conn_close(c);
  gev_conn_unref(c);
}

static void release_registry(void)
{
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < REG; i++)
    if (reg[i]) {
      gev_conn_unref(reg[i]);
      reg[i] = NULL;
    }
  pthread_mutex_unlock(&reg_mu);
}

static void run_script(const uint8_t *p, size_t n, int *fd)
{
  static char payload[65536];

  for (size_t i = 0; i < n; i++) {
    int k = p[i] & 3, op = (p[i] >> 2) % 8;
    size_t arg = i + 1 < n ? p[i + 1] : 0;

    if (fd[k] < 0 && op != 7) {
      fd[k] = dial(k);
      continue;
    }
    switch (op) {
    case 0: /* write arg * 257 bytes: up to 64 KiB */
    case 1:
      send(fd[k], payload, arg * 257, MSG_NOSIGNAL | MSG_DONTWAIT);
      i++;
      break;
    case 2: shutdown(fd[k], SHUT_WR); break;
    case 3:
      reset(fd[k]);
      fd[k] = -1;
      break;
    case 4:
      close(fd[k]);
      fd[k] = -1;
      break;
    case 5: drain(fd[k]); break;
    case 6: /* pause: up to 2.5 ms */
      nanosleep(&(struct timespec){.tv_nsec = (long)arg * 10000}, NULL);
      i++;
      break;
    case 7:
      cross_send((unsigned)arg | (unsigned)(p[i] & 0x80) << 1, arg * 16);
      i++;
      break;
    }
  }
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool quiet(int fd)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) == 0;
}

static bool all_closed(void)
{
  return quiet(srv[0]->addrs[0].fd) && quiet(srv[1]->addrs[0].fd) &&
         gev_server_conn_count(srv[0]) == 0 &&
         gev_server_conn_count(srv[1]) == 0 &&
         atomic_load(&closes) == atomic_load(&connects);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int fd[PEERS] = {-1, -1, -1, -1};

  if (!srv[0])
    setup();
  if (size < 8)
    return 0;
  memcpy(&handler_seed, data, 8);
  run_script(data + 8, size - 8, fd);
  for (int k = 0; k < PEERS; k++)
    if (fd[k] >= 0)
      reset(fd[k]);
  release_registry();
  /* Every connection must end: the peer is gone. A connection still in
   * a listener's accept queue is not counted yet (on a loaded machine the
   * acceptor may take it much later: a first version that trusted the
   * counts alone reported such late arrivals as connections left open),
   * so the listeners must be quiet too (not readable: their queues are
   * empty), twice 1 ms apart (one just taken is counted at once). 60 s in
   * all, then it is a hang. */
  uint64_t t0 = now_ms();
  for (int calm = 0; calm < 2 && now_ms() - t0 < 60000;) {
    calm = all_closed() ? calm + 1 : 0;
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  }
  if (gev_server_conn_count(srv[0]) || gev_server_conn_count(srv[1])) {
    fprintf(stderr,
            "fuzz-conn: connections left open after the peer left (tcp %d, "
            "unix %d; %d on_connect, %d on_close)\n",
            gev_server_conn_count(srv[0]), gev_server_conn_count(srv[1]),
            atomic_load(&connects), atomic_load(&closes));
    print_open();
    for (int k = 0; k < 2; k++)
      fprintf(stderr, "  server %d: count %d, acceptor loop nconns %d\n", k,
              gev_server_conn_count(srv[k]),
              atomic_load(&srv[k]->acceptor->nconns));
    for (int k = 0; k < 2; k++)
      for (int i = 0; i < srv[k]->nloops; i++) {
        gev_loop *l = srv[k]->workers[i].loop;
        pthread_mutex_lock(&l->mu);
        fprintf(stderr,
                "  server %d loop %d: nconns %d pending %zu wake_pending %d\n",
                k, i, atomic_load(&l->nconns), l->pending.n,
                (int)l->wake_pending);
        pthread_mutex_unlock(&l->mu);
      }
    abort();
  }
  if (atomic_load(&bad) || atomic_load(&closes) != atomic_load(&connects)) {
    fprintf(stderr, "fuzz-conn: %d on_connect, %d on_close, %d bad\n",
            atomic_load(&connects), atomic_load(&closes), atomic_load(&bad));
    abort();
  }
  return 0;
}
