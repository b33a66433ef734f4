/* udp-client - a UDP echo load generator that verifies every datagram.
 *
 * Each thread runs its own epoll over its share of the senders. A sender
 * keeps `pipeline` datagrams of `size` bytes in flight: the first 8 bytes
 * carry the sender's id and the datagram's sequence number, the rest is a
 * slice of a random pattern made once, at an offset that both select, and
 * every echo is checked (header, then the whole slice). A reply that
 * skips sequence numbers counts the skipped ones as lost; a sender that
 * hears nothing for 200 ms counts its window as lost and sends a new one
 * (UDP may drop; the run goes on).
 *
 * Two ways to be 50 senders:
 * - default: a connected socket per sender, read with recvmmsg and
 *   refilled with one sendmmsg each;
 * - --shared: one socket per thread, bound to the wildcard address, and
 *   each sender its own loopback source address (127.0.0.2 + id, chosen
 *   per datagram with IP_PKTINFO). One recvmmsg reads the replies of many
 *   senders and one sendmmsg sends all that they may send next, so the
 *   client's cost per datagram is a fraction of a system call: the server
 *   is what is measured. Each reply's destination address is checked
 *   against its sender (a reply sent to the wrong peer is an error).
 * The payload is sent from the pattern itself (header and slice as two
 * iovecs): nothing is generated per datagram.
 *
 *   udp-client -p PORT [-H 127.0.0.1] [-c 50] [-P 1] [-s 64] [-d 5]
 *              [-w 0] [-t 1] [-n DGRAMS_PER_SENDER] [--shared]
 *              [--max-lost N] [--csv]
 *
 * Prints datagrams/s, lost and verify_errors (--csv: "dgrams_per_s,lost,
 * errors"). Exit status 0 when nothing was wrong and at most --max-lost
 * (default: any) datagrams were lost. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
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
#define OUTQ 64 /* datagrams per sendmmsg */
#define MAX_SIZE 65507
#define STALL_MS 200
#define SLICES 256     /* payload offsets into the pattern */
#define MAX_SHARED 250 /* senders 127.0.0.2 .. 127.0.0.251 */

typedef struct cfg {
  const char *host;
  int port, socks, pipeline, threads;
  size_t size;
  double duration, warmup;
  long long per_sock;
  long long max_lost;
  int csv, shared;
} cfg;

typedef struct sock {
  int fd, id;
  uint32_t next_send, next_recv, queued;
  long long recvd;
  uint64_t last_ms;
  int done;
} sock;

/* Datagrams gathered for one sendmmsg. */
typedef struct outq {
  struct mmsghdr m[OUTQ];
  struct iovec iov[OUTQ][2];
  uint32_t hdr[OUTQ][2];
  _Alignas(struct cmsghdr) unsigned char ctl[OUTQ][CMSG_SPACE(
      sizeof(struct in_pktinfo))];
  sock *who[OUTQ];
  int n;
} outq;

typedef struct worker {
  const cfg *c;
  sock *s;
  int n;
  int fd; /* --shared: the thread's socket */
  struct sockaddr_in server;
  outq q;
  pthread_t th;
  long long counted, lost, errors;
} worker;

static atomic_int phase;       /* 0 warm-up, 1 measuring, 2 stop */
static unsigned char *pattern; /* MAX_SIZE + SLICES random bytes */

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void make_pattern(void)
{
  uint64_t x = 0x9e3779b97f4a7c15u ^ (uint64_t)time(NULL);

  if (!(pattern = malloc(MAX_SIZE + SLICES))) {
    perror("udp-client: malloc");
    exit(1);
  }
  for (size_t i = 0; i < MAX_SIZE + SLICES; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    pattern[i] = (unsigned char)(x >> 24);
  }
}

/* The slice of the pattern that datagram seq of sender id carries. */
static const unsigned char *slice(int id, uint32_t seq)
{
  return pattern + (((uint32_t)id * 31u + seq * 7u) % SLICES);
}

static struct in_addr sender_addr(int id)
{
  return (struct in_addr){htonl(INADDR_LOOPBACK + 2 + (uint32_t)id)};
}

/* Sends what is gathered: one sendmmsg (more if the kernel takes a part).
 * A sender's datagrams not taken are made again later with the same
 * numbers. */
static void flush(worker *w, int fd)
{
  outq *q = &w->q;
  int at = 0;

  while (at < q->n) {
    int r = sendmmsg(fd, q->m + at, (unsigned)(q->n - at), MSG_DONTWAIT);
    if (r <= 0)
      break;
    for (int i = at; i < at + r; i++)
      q->who[i]->next_send++;
    at += r;
  }
  for (int i = 0; i < q->n; i++)
    q->who[i]->queued = 0;
  q->n = 0;
}

/* Gathers what s's window allows; flushes when the batch is full. */
static void refill(worker *w, sock *s)
{
  outq *q = &w->q;
  size_t sz = w->c->size;
  int fd = w->c->shared ? w->fd : s->fd;

  for (;;) {
    uint32_t seq = s->next_send + s->queued;
    if ((int)(seq - s->next_recv) >= w->c->pipeline ||
        (w->c->per_sock && seq >= (uint32_t)w->c->per_sock))
      return;
    if (q->n == OUTQ) {
      flush(w, fd);
      continue;
    }
    int i = q->n++;
    q->who[i] = s;
    q->hdr[i][0] = (uint32_t)s->id;
    q->hdr[i][1] = seq;
    q->iov[i][0] = (struct iovec){q->hdr[i], 8};
    q->iov[i][1] = (struct iovec){(void *)(slice(s->id, seq) + 8), sz - 8};
    q->m[i].msg_hdr = (struct msghdr){.msg_iov = q->iov[i], .msg_iovlen = 2};
    if (w->c->shared) {
      struct msghdr *h = &q->m[i].msg_hdr;
      struct cmsghdr *cm;
      h->msg_name = &w->server;
      h->msg_namelen = sizeof(w->server);
      h->msg_control = q->ctl[i];
      h->msg_controllen = sizeof(q->ctl[i]);
      cm = CMSG_FIRSTHDR(h);
      cm->cmsg_level = IPPROTO_IP;
      cm->cmsg_type = IP_PKTINFO;
      cm->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
      memcpy(CMSG_DATA(cm),
             &(struct in_pktinfo){.ipi_spec_dst = sender_addr(s->id)},
             sizeof(struct in_pktinfo));
    }
    s->queued++;
  }
}

/* s is the sender the reply names (NULL: none of this thread's). */
static void check(worker *w, sock *s, const unsigned char *p, size_t len)
{
  uint32_t h[2];

  if (!s || len != w->c->size || len < 8) {
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
  if (memcmp(slice(s->id, h[1]) + 8, p + 8, len - 8) != 0) {
    w->errors++;
    return;
  }
  if (atomic_load_explicit(&phase, memory_order_relaxed) == 1) {
    w->counted++;
    w->lost += h[1] - s->next_recv;
  }
  s->next_recv = h[1] + 1;
  s->recvd++;
  s->last_ms = now_ms();
}

static void after_reply(worker *w, sock *s)
{
  if (w->c->per_sock && s->next_recv >= (uint32_t)w->c->per_sock)
    s->done = 1;
  else
    refill(w, s);
}

/* Receive slots, the thread's own. */
typedef struct rxq {
  struct mmsghdr m[BATCH];
  struct iovec iov[BATCH];
  _Alignas(struct cmsghdr) unsigned char ctl[BATCH][CMSG_SPACE(
      sizeof(struct in_pktinfo))];
  unsigned char *buf;
  size_t slot;
} rxq;

static int rx_init(rxq *r, size_t size)
{
  r->slot = size + 1; /* a longer reply shows as one */
  if (!(r->buf = malloc(BATCH * r->slot)))
    return -1;
  for (int i = 0; i < BATCH; i++)
    r->iov[i] = (struct iovec){r->buf + (size_t)i * r->slot, r->slot};
  return 0;
}

static int rx(rxq *r, int fd, bool ctl)
{
  for (int i = 0; i < BATCH; i++) {
    r->m[i].msg_hdr = (struct msghdr){.msg_iov = &r->iov[i], .msg_iovlen = 1};
    if (ctl) {
      r->m[i].msg_hdr.msg_control = r->ctl[i];
      r->m[i].msg_hdr.msg_controllen = sizeof(r->ctl[i]);
    }
  }
  return recvmmsg(fd, r->m, BATCH, MSG_DONTWAIT, NULL);
}

static void on_readable(worker *w, rxq *r, sock *s)
{
  int n = rx(r, s->fd, false);

  for (int i = 0; i < n; i++)
    check(w, s, r->iov[i].iov_base, r->m[i].msg_len);
  after_reply(w, s);
  flush(w, s->fd);
}

/* --shared: the reply's sender, from its header, confirmed by the address
 * it was sent to. */
static sock *sender_of(worker *w, struct msghdr *h, const void *p, size_t len)
{
  uint32_t id;
  sock *s;

  if (len < 4)
    return NULL;
  memcpy(&id, p, 4);
  if (id < (uint32_t)w->s[0].id || id >= (uint32_t)(w->s[0].id + w->n))
    return NULL;
  s = &w->s[id - (uint32_t)w->s[0].id];
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm))
    if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
      return pi.ipi_addr.s_addr == sender_addr(s->id).s_addr ? s : NULL;
    }
  return NULL;
}

static void on_readable_shared(worker *w, rxq *r)
{
  for (int round = 0; round < 4; round++) {
    int n = rx(r, w->fd, true);
    for (int i = 0; i < n; i++) {
      const unsigned char *p = r->iov[i].iov_base;
      sock *s = sender_of(w, &r->m[i].msg_hdr, p, r->m[i].msg_len);
      check(w, s, p, r->m[i].msg_len);
      if (s && !s->done)
        after_reply(w, s);
    }
    if (n < BATCH)
      break;
  }
  flush(w, w->fd);
}

/* A sender that heard nothing for STALL_MS: its window is lost. Returns
 * the senders that are done now (-n: nothing more to send). */
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
    else {
      refill(w, s);
      if (!w->c->shared)
        flush(w, s->fd);
    }
  }
  if (w->c->shared)
    flush(w, w->fd);
  return done;
}

static int done_count(const worker *w)
{
  int d = 0;
  for (int i = 0; i < w->n; i++)
    d += w->s[i].done;
  return d;
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  struct epoll_event ev[64];
  int ep = epoll_create1(EPOLL_CLOEXEC);
  rxq r;

  if (ep < 0 || rx_init(&r, w->c->size) < 0) {
    perror("udp-client: worker");
    exit(1);
  }
  for (int i = 0; i < w->n; i++) {
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &w->s[i]};
    if (!w->c->shared)
      epoll_ctl(ep, EPOLL_CTL_ADD, w->s[i].fd, &e);
    w->s[i].last_ms = now_ms();
    refill(w, &w->s[i]);
    if (!w->c->shared)
      flush(w, w->s[i].fd);
  }
  if (w->c->shared) {
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, w->fd, &e);
    flush(w, w->fd);
  }
  while (atomic_load(&phase) < 2 && done_count(w) < w->n) {
    int n = epoll_wait(ep, ev, 64, 50);
    for (int i = 0; i < n; i++) {
      sock *s = ev[i].data.ptr;
      if (!s)
        on_readable_shared(w, &r);
      else if (!s->done)
        on_readable(w, &r, s);
    }
    unstall(w, now_ms());
  }
  close(ep);
  free(r.buf);
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

/* --shared: the thread's socket, on the wildcard address so that each
 * sender may send from its own loopback address and hear its replies. */
static int open_shared(const cfg *c, struct sockaddr_in *server)
{
  struct sockaddr_in any = {.sin_family = AF_INET};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1, big = 4 << 20;

  *server = (struct sockaddr_in){.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)c->port)};
  if (fd < 0 || inet_pton(AF_INET, c->host, &server->sin_addr) != 1 ||
      setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)) < 0 ||
      bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0) {
    perror("udp-client: shared socket");
    exit(1);
  }
  /* Replies of many senders wait in one queue. */
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  return fd;
}

static void parse(int argc, char **argv, cfg *c)
{
  static const struct option lo[] = {{"csv", no_argument, 0, 'C'},
                                     {"shared", no_argument, 0, 'S'},
                                     {"max-lost", required_argument, 0, 'L'},
                                     {0, 0, 0, 0}};
  int o;

  *c = (cfg){"127.0.0.1", 0, 50, 1, 1, 64, 5, 0, 0, -1, 0, 0};
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
    case 'S': c->shared = 1; break;
    default: exit(2);
    }
  }
  if (c->port <= 0 || c->socks < 1 || c->pipeline < 1 || c->threads < 1 ||
      c->size < 8 || c->size > MAX_SIZE || c->threads > c->socks ||
      (c->shared && c->socks > MAX_SHARED)) {
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
  make_pattern();
  s = calloc((size_t)c.socks, sizeof(*s));
  w = calloc((size_t)c.threads, sizeof(*w));
  if (!s || !w) {
    perror("udp-client: calloc");
    return 1;
  }
  for (int i = 0; i < c.socks; i++)
    s[i] = (sock){.fd = c.shared ? -1 : open_sock(&c), .id = i};
  atomic_store(&phase, c.warmup > 0 ? 0 : 1);
  for (int i = 0, at = 0; i < c.threads; i++) {
    int n = c.socks / c.threads + (i < c.socks % c.threads);
    w[i] = (worker){.c = &c, .s = s + at, .n = n, .fd = -1};
    if (c.shared)
      w[i].fd = open_shared(&c, &w[i].server);
    at += n;
  }
  for (int i = 0; i < c.threads; i++)
    pthread_create(&w[i].th, NULL, worker_main, &w[i]);
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
    if (w[i].fd >= 0)
      close(w[i].fd);
  }
  t1 = now_ms();
  secs = (double)(t1 - t0) / 1000.0;
  if (c.csv)
    printf("%.0f,%lld,%lld\n", counted / (secs > 0 ? secs : 1), lost, errors);
  else
    printf("datagrams=%lld dgrams/s=%.0f lost=%lld verify_errors=%lld\n",
           counted, counted / (secs > 0 ? secs : 1), lost, errors);
  for (int i = 0; i < c.socks; i++)
    if (s[i].fd >= 0)
      close(s[i].fd);
  free(s);
  free(w);
  free(pattern);
  return errors || (c.max_lost >= 0 && lost > c.max_lost) ? 1 : 0;
}
