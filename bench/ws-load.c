/* ws-load - a WebSocket echo load generator (and, with --tcp, the same
 * load as plain TCP echo, so the two are compared through one client).
 *
 * One thread, one epoll. Each connection does the opening handshake, then
 * keeps `pipeline` binary messages of `size` bytes in flight: masked
 * client frames (a fresh mask per frame, as RFC 6455 wants), all the
 * window allows in one send. Each echo is checked: frame header, length,
 * and the message's sequence number in its first 8 bytes. Counts messages
 * echoed during the measured seconds after the warm-up.
 *
 *   ws-load -p PORT [-c 50] [-P 1] [-s 64] [-d 5] [-w 1] [--tcp]
 *           [--path /echo]
 *
 * Prints one line: "msgs_per_s=N mb_per_s=X total=N errors=N" (total:
 * every echo, warm-up included). Exit 0 when every echo matched. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  uint64_t sent, echoed; /* messages */
  unsigned char *in;
  size_t in_len, in_cap;
  unsigned char *out;
  size_t out_len, out_off, out_cap;
} conn;

static int port, conns = 50, pipeline = 1, tcp_mode;
static size_t size = 64;
static double duration = 5, warmup = 1;
static const char *path = "/";
static uint64_t rng = 0x9E3779B97F4A7C15ull, errors;

static double now(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t next_mask(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)rng;
}

static void reserve_out(conn *c, size_t more)
{
  if (c->out_len + more <= c->out_cap)
    return;
  while (c->out_cap < c->out_len + more)
    c->out_cap = c->out_cap ? c->out_cap * 2 : 65536;
  if (!(c->out = realloc(c->out, c->out_cap)))
    exit(1);
}

/* Appends message number `seq`: a masked binary frame, or raw bytes. */
static void queue_message(conn *c, uint64_t seq)
{
  unsigned char *p;
  size_t hl = tcp_mode ? 0 : size < 126 ? 6 : size < 65536 ? 8 : 14;
  uint32_t m = next_mask();
  unsigned char mask[4];

  reserve_out(c, hl + size);
  p = c->out + c->out_len;
  if (!tcp_mode) {
    p[0] = 0x82;
    if (size < 126) {
      p[1] = (unsigned char)(0x80 | size);
    } else if (size < 65536) {
      p[1] = 0x80 | 126;
      p[2] = (unsigned char)(size >> 8);
      p[3] = (unsigned char)size;
    } else {
      p[1] = 0x80 | 127;
      for (int i = 0; i < 8; i++)
        p[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    }
    memcpy(mask, &m, 4);
    memcpy(p + hl - 4, mask, 4);
  }
  memset(p + hl, 'x', size);
  memcpy(p + hl, &seq, size < 8 ? size : 8);
  if (!tcp_mode) {
    /* Eight bytes at a time, as a competent client would: byte by byte
     * this client, not the server, set the pace of pipelined runs. */
    uint64_t w = (uint64_t)m << 32 | m, v;
    size_t i = 0;

    for (; i + 8 <= size; i += 8) {
      memcpy(&v, p + hl + i, 8);
      v ^= w;
      memcpy(p + hl + i, &v, 8);
    }
    for (; i < size; i++)
      p[hl + i] ^= mask[i & 3];
  }
  c->out_len += hl + size;
  c->sent++;
}

static void flush_out(conn *c)
{
  while (c->out_off < c->out_len) {
    ssize_t w =
        send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN)
        errors++;
      return;
    }
    c->out_off += (size_t)w;
  }
  c->out_len = c->out_off = 0;
}

/* Consumes whole echoes from c->in; returns how many. */
static uint64_t take_echoes(conn *c)
{
  size_t off = 0, hl = tcp_mode ? 0 : size < 126 ? 2 : size < 65536 ? 4 : 10;
  uint64_t n = 0;

  while (c->in_len - off >= hl + size) {
    unsigned char *p = c->in + off;
    uint64_t seq = 0;

    if (!tcp_mode && (p[0] != 0x82 || (p[1] & 0x80)))
      errors++;
    memcpy(&seq, p + hl, size < 8 ? size : 8);
    if (size >= 8 && seq != c->echoed)
      errors++;
    c->echoed++;
    off += hl + size;
    n++;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return n;
}

static int read_in(conn *c)
{
  for (;;) {
    if (c->in_cap - c->in_len < 65536) {
      c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
      if (!(c->in = realloc(c->in, c->in_cap)))
        exit(1);
    }
    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (r > 0) {
      c->in_len += (size_t)r;
      continue;
    }
    if (r == 0 || errno != EAGAIN)
      return -1;
    return 0;
  }
}

static int dial(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons(port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    perror("connect");
    exit(1);
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* Blocking handshake before the load starts. */
static void handshake(conn *c)
{
  char req[512], buf[1024];
  size_t n = 0;
  int len = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: "
                     "websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                     "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "
                     "13\r\n\r\n",
                     path);

  if (send(c->fd, req, (size_t)len, MSG_NOSIGNAL) != len)
    exit(1);
  while (n < 4 || memcmp(buf + n - 4, "\r\n\r\n", 4) != 0) {
    if (n + 1 >= sizeof(buf) || recv(c->fd, buf + n, 1, 0) != 1) {
      fprintf(stderr, "ws-load: handshake failed\n");
      exit(1);
    }
    n++;
  }
  if (strncmp(buf, "HTTP/1.1 101", 12) != 0) {
    fprintf(stderr, "ws-load: no 101: %.*s\n", (int)n, buf);
    exit(1);
  }
}

static void parse(int argc, char **argv)
{
  static const struct option lo[] = {{"tcp", no_argument, 0, 'T'},
                                     {"path", required_argument, 0, 'u'},
                                     {0, 0, 0, 0}};
  int ch;

  while ((ch = getopt_long(argc, argv, "p:c:P:s:d:w:", lo, 0)) != -1) {
    switch (ch) {
    case 'p': port = atoi(optarg); break;
    case 'c': conns = atoi(optarg); break;
    case 'P': pipeline = atoi(optarg); break;
    case 's': size = (size_t)atol(optarg); break;
    case 'd': duration = atof(optarg); break;
    case 'w': warmup = atof(optarg); break;
    case 'T': tcp_mode = 1; break;
    case 'u': path = optarg; break;
    default:
      fprintf(stderr, "usage: ws-load -p PORT [-c N] [-P N] [-s BYTES] "
                      "[-d S] [-w S] [--tcp] [--path P]\n");
      exit(2);
    }
  }
  if (!port || conns < 1 || pipeline < 1 || size < 1)
    exit(2);
}

int main(int argc, char **argv)
{
  conn *cs;
  int ep = epoll_create1(0);
  struct epoll_event evs[256];
  double t0, start = 0, end;
  uint64_t counted = 0;

  parse(argc, argv);
  if (!(cs = calloc((size_t)conns, sizeof(*cs))))
    return 1;
  for (int i = 0; i < conns; i++) {
    cs[i].fd = dial();
    if (!tcp_mode)
      handshake(&cs[i]);
    fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    for (int k = 0; k < pipeline; k++)
      queue_message(&cs[i], cs[i].sent);
    flush_out(&cs[i]);
  }
  t0 = now();
  end = t0 + warmup + duration;
  for (double t = t0; t < end; t = now()) {
    int n = epoll_wait(ep, evs, 256, 100);

    if (!start && t >= t0 + warmup)
      start = t, counted = 0;
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      uint64_t got;

      if (evs[i].events & EPOLLOUT)
        flush_out(c); /* edge-triggered: room again */
      if (read_in(c) < 0) {
        fprintf(stderr, "ws-load: connection closed\n");
        return 1;
      }
      got = take_echoes(c);
      counted += got;
      for (uint64_t k = 0; k < got; k++)
        queue_message(c, c->sent);
      flush_out(c);
    }
  }
  double secs = now() - start;
  uint64_t total = 0;
  for (int i = 0; i < conns; i++)
    total += cs[i].echoed;
  printf("msgs_per_s=%.0f mb_per_s=%.1f total=%llu errors=%llu\n",
         (double)counted / secs, (double)counted * (double)size / secs / 1e6,
         (unsigned long long)total, (unsigned long long)errors);
  return errors ? 1 : 0;
}
