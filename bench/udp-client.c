/* udp-client - a UDP echo load generator that verifies every datagram.
 *
 * Each thread runs its own epoll over its share of the sockets, each
 * connected to the server. A socket keeps `pipeline` datagrams of `size`
 * bytes in flight: the first 8 bytes carry the socket's id and the
 * datagram's sequence number, the rest a pattern derived from both, and
 * every echo is checked. A reply that skips sequence numbers counts the
 * skipped ones as lost; a socket that hears nothing for 200 ms counts its
 * window as lost and sends a new one (UDP may drop; the run goes on).
 * Replies are read with recvmmsg and the window refilled with sendmmsg, so
 * the client's own cost per datagram stays small.
 *
 *   udp-client -p PORT [-H 127.0.0.1] [-c 50] [-P 1] [-s 64] [-d 5]
 *              [-w 0] [-t 1] [-n DGRAMS_PER_SOCKET] [--max-lost N] [--csv]
 *
 * Prints datagrams/s, lost and verify_errors (--csv: "dgrams_per_s,lost,
 * errors"). Exit status 0 when nothing was wrong and at most --max-lost
 * (default: any) datagrams were lost. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAX_SIZE 65507
#define STALL_MS 200

typedef struct cfg {
  const char *host;
  int port, socks, pipeline, threads;
  size_t size;
  double duration, warmup;
  long long per_sock;
  long long max_lost;
  int csv;
} cfg;

typedef struct sock {
  int fd, id;
  uint32_t next_send, next_recv;
  long long recvd;
  uint64_t last_ms;
  int done;
} sock;

typedef struct worker {
  const cfg *c;
  sock *s;
  int n;
  pthread_t th;
  long long counted, lost, errors;
} worker;

static atomic_int phase; /* 0 warm-up, 1 measuring, 2 stop */

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fill(unsigned char *p, size_t n, int id, uint32_t seq)
{
  uint32_t h[2] = {(uint32_t)id, seq}, x = (uint32_t)id * 2654435761u ^ seq;
  size_t i = 0;

  for (; i < n && i < sizeof(h); i++)
    p[i] = ((unsigned char *)h)[i];
  for (; i < n; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (unsigned char)(x >> 16);
  }
}

/* Sends what the window allows, with one sendmmsg. */
static void refill(worker *w, sock *s)
{
  static _Thread_local unsigned char buf[BATCH][4096];
  static _Thread_local unsigned char *big;
  struct mmsghdr m[BATCH];
  struct iovec iov[BATCH];
  int n = 0;
  size_t sz = w->c->size;

  if (sz > sizeof(buf[0]) && !big && !(big = malloc((size_t)BATCH * sz)))
    return;
  while (n < BATCH &&
         (int)(s->next_send + (uint32_t)n - s->next_recv) < w->c->pipeline &&
         (!w->c->per_sock ||
          s->next_send + (uint32_t)n < (uint32_t)w->c->per_sock)) {
    unsigned char *p = sz > sizeof(buf[0]) ? big + (size_t)n * sz : buf[n];
    fill(p, sz, s->id, s->next_send + (uint32_t)n);
    iov[n] = (struct iovec){p, sz};
    m[n].msg_hdr = (struct msghdr){.msg_iov = &iov[n], .msg_iovlen = 1};
    n++;
  }
  if (n == 0)
    return;
  int r = sendmmsg(s->fd, m, (unsigned)n, MSG_DONTWAIT);
  if (r > 0)
    s->next_send += (uint32_t)r;
}

static void check(worker *w, sock *s, const unsigned char *p, size_t len)
{
  static _Thread_local unsigned char want[MAX_SIZE];
  uint32_t h[2];

  if (len != w->c->size || len < 8) {
    w->errors++;
    return;
  }
  memcpy(h, p, sizeof(h));
  if (h[0] != (uint32_t)s->id || (int32_t)(h[1] - s->next_recv) < 0 ||
      (int32_t)(h[1] - s->next_send) >= 0) {
    if ((int32_t)(h[1] - s->next_recv) >= 0)
      w->errors++; /* never sent */
    return;        /* else a late reply to a window given up on */
  }
  fill(want, len, s->id, h[1]);
  if (memcmp(want, p, len) != 0) {
    w->errors++;
    return;
  }
  if (atomic_load_explicit(&phase, memory_order_relaxed) == 1) {
    w->counted++;
    w->lost += h[1] - s->next_recv;
  }
  s->next_recv = h[1] + 1;
  s->recvd++;
}

static void on_readable(worker *w, sock *s)
{
  static _Thread_local unsigned char buf[BATCH][2048];
  static _Thread_local unsigned char *big;
  struct mmsghdr m[BATCH];
  struct iovec iov[BATCH];
  size_t slot = w->c->size > 2048 ? w->c->size + 1 : 2048;

  if (slot > 2048 && !big && !(big = malloc((size_t)BATCH * slot)))
    return;
  for (int i = 0; i < BATCH; i++) {
    iov[i] =
        (struct iovec){slot > 2048 ? big + (size_t)i * slot : buf[i], slot};
    m[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
  }
  int r = recvmmsg(s->fd, m, BATCH, MSG_DONTWAIT, NULL);
  for (int i = 0; i < r; i++)
    check(w, s, iov[i].iov_base, m[i].msg_len);
  if (r > 0)
    s->last_ms = now_ms();
  if (w->c->per_sock && s->next_recv >= (uint32_t)w->c->per_sock)
    s->done = 1;
  else
    refill(w, s);
}

/* A socket that heard nothing for STALL_MS: its window is lost. Returns
 * the sockets that are done now (-n: nothing more to send). */
static int unstall(worker *w, uint64_t now)
{
  int done = 0;

  for (int i = 0; i < w->n; i++) {
    sock *s = &w->s[i];
    if (s->done || now - s->last_ms < STALL_MS)
      continue;
    if (atomic_load(&phase) == 1)
      w->lost += s->next_send - s->next_recv;
    s->next_recv = s->next_send;
    s->last_ms = now;
    if (w->c->per_sock && s->next_recv >= (uint32_t)w->c->per_sock)
      done += s->done = 1;
    else
      refill(w, s);
  }
  return done;
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  struct epoll_event ev[64];
  int ep = epoll_create1(EPOLL_CLOEXEC), left = w->n;

  for (int i = 0; i < w->n; i++) {
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &w->s[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, w->s[i].fd, &e);
    w->s[i].last_ms = now_ms();
    refill(w, &w->s[i]);
  }
  while (atomic_load(&phase) < 2 && left > 0) {
    int n = epoll_wait(ep, ev, 64, 50);
    for (int i = 0; i < n; i++) {
      sock *s = ev[i].data.ptr;
      if (!s->done) {
        on_readable(w, s);
        left -= s->done;
      }
    }
    left -= unstall(w, now_ms());
  }
  close(ep);
  return NULL;
}

static int open_sock(const cfg *c)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)c->port)};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0 || inet_pton(AF_INET, c->host, &a.sin_addr) != 1 ||
      connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    perror("udp-client: socket");
    exit(1);
  }
  return fd;
}

static void parse(int argc, char **argv, cfg *c)
{
  static const struct option lo[] = {{"csv", no_argument, 0, 'C'},
                                     {"max-lost", required_argument, 0, 'L'},
                                     {0, 0, 0, 0}};
  int o;

  *c = (cfg){"127.0.0.1", 0, 50, 1, 1, 64, 5, 0, 0, -1, 0};
  while ((o = getopt_long(argc, argv, "H:p:c:P:s:d:w:t:n:", lo, NULL)) != -1) {
    switch (o) {
    case 'H': c->host = optarg; break;
    case 'p': c->port = atoi(optarg); break;
    case 'c': c->socks = atoi(optarg); break;
    case 'P': c->pipeline = atoi(optarg); break;
    case 's': c->size = (size_t)atol(optarg); break;
    case 'd': c->duration = atof(optarg); break;
    case 'w': c->warmup = atof(optarg); break;
    case 't': c->threads = atoi(optarg); break;
    case 'n': c->per_sock = atoll(optarg); break;
    case 'L': c->max_lost = atoll(optarg); break;
    case 'C': c->csv = 1; break;
    default: exit(2);
    }
  }
  if (c->port <= 0 || c->socks < 1 || c->pipeline < 1 || c->threads < 1 ||
      c->size < 8 || c->size > MAX_SIZE || c->threads > c->socks) {
    fprintf(stderr, "udp-client: bad arguments\n");
    exit(2);
  }
}

int main(int argc, char **argv)
{
  cfg c;
  worker *w;
  sock *s;
  long long counted = 0, lost = 0, errors = 0;
  double secs;
  uint64_t t0, t1;

  parse(argc, argv, &c);
  s = calloc((size_t)c.socks, sizeof(*s));
  w = calloc((size_t)c.threads, sizeof(*w));
  for (int i = 0; i < c.socks; i++)
    s[i] = (sock){.fd = open_sock(&c), .id = i};
  atomic_store(&phase, c.warmup > 0 ? 0 : 1);
  for (int i = 0, at = 0; i < c.threads; i++) {
    int n = c.socks / c.threads + (i < c.socks % c.threads);
    w[i] = (worker){.c = &c, .s = s + at, .n = n};
    at += n;
    pthread_create(&w[i].th, NULL, worker_main, &w[i]);
  }
  if (c.warmup > 0) {
    usleep((useconds_t)(c.warmup * 1e6));
    atomic_store(&phase, 1);
  }
  t0 = now_ms();
  if (!c.per_sock) {
    usleep((useconds_t)(c.duration * 1e6));
    atomic_store(&phase, 2);
  }
  for (int i = 0; i < c.threads; i++) {
    pthread_join(w[i].th, NULL);
    counted += w[i].counted;
    lost += w[i].lost;
    errors += w[i].errors;
  }
  t1 = now_ms();
  secs = (double)(t1 - t0) / 1000.0;
  if (c.csv)
    printf("%.0f,%lld,%lld\n", counted / (secs > 0 ? secs : 1), lost, errors);
  else
    printf("datagrams=%lld dgrams/s=%.0f lost=%lld verify_errors=%lld\n",
           counted, counted / (secs > 0 ? secs : 1), lost, errors);
  for (int i = 0; i < c.socks; i++)
    close(s[i].fd);
  free(s);
  free(w);
  return errors || (c.max_lost >= 0 && lost > c.max_lost) ? 1 : 0;
}
