/* ws-load - a WebSocket echo load generator (and, with --tcp, the same
 * load as plain TCP echo, so the two are compared through one client).
 *
 * One thread, one epoll. Each connection does the opening handshake, then
 * keeps `pipeline` binary messages of `size` bytes in flight (the same
 * number of messages in both modes: the rate compared is messages, and
 * the framing's few bytes are part of what a WebSocket costs), sending
 * all the window allows in one send. The frames come from a template
 * built once (below), so the client's work per message is the same in
 * both modes: a share of one send and one recv, a header check and an
 * 8-byte compare, and a whole-payload compare on one echo in SAMPLE.
 * Counts messages echoed during the measured seconds after the warm-up.
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

/* Frames are built once: NSLOT messages, each with a random mask of its
 * own (RFC 6455 5.3 wants an unpredictable key per frame; a load client
 * re-sending a fixed set of keyed frames is what the server sees as
 * fresh frames), laid out twice in a row so that any run of up to NSLOT
 * consecutive frames, starting at any one, is contiguous: a connection
 * sends straight from the template, never copying. Message m of a
 * connection is slot m % NSLOT. Plain TCP (--tcp) uses the same template
 * without headers or masks, so both modes cost the client the same per
 * byte sent. */
#define NSLOT 64
/* One echo in SAMPLE, picked at random (a fixed period could alias with
 * a periodic fault), is compared whole with its payload; every echo
 * has its header bytes and its slot number (first 8 payload bytes)
 * checked. */
#define SAMPLE 16

typedef struct conn {
  int fd;
  uint64_t queued, echoed; /* messages */
  uint64_t tx;             /* bytes sent */
  bool want_out;           /* EPOLLOUT registered: a send fell short */
  unsigned char *in;
  size_t in_len, in_cap;
} conn;

static int port, conns = 50, pipeline = 1, tcp_mode, ep;
static size_t size = 64;
static double duration = 5, warmup = 1;
static const char *path = "/";
static uint64_t rng = 0x9E3779B97F4A7C15ull, errors;
static unsigned char *tmpl;    /* 2 * NSLOT frames as sent */
static unsigned char *payload; /* NSLOT payloads as echoed */
static size_t fl, rl, rhl;     /* frame, reply and reply header length */

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
  return (uint32_t)(rng >> 16);
}

static size_t header(unsigned char *p, bool masked)
{
  size_t k = 2;

  p[0] = 0x82;
  if (size < 126) {
    p[1] = (unsigned char)size;
  } else if (size < 65536) {
    p[1] = 126;
    p[2] = (unsigned char)(size >> 8);
    p[3] = (unsigned char)size;
    k = 4;
  } else {
    p[1] = 127;
    for (int i = 0; i < 8; i++)
      p[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    k = 10;
  }
  if (masked)
    p[1] |= 0x80;
  return k + (masked ? 4 : 0);
}

static void build_template(void)
{
  unsigned char rh[14];

  rhl = tcp_mode ? 0 : header(rh, false);
  fl = (tcp_mode ? 0 : header(rh, true)) + size;
  rl = rhl + size;
  if (!(tmpl = malloc(2 * NSLOT * fl)) || !(payload = malloc(NSLOT * size)))
    exit(1);
  for (uint64_t s = 0; s < NSLOT; s++) {
    unsigned char *f = tmpl + s * fl, *pl = payload + s * size, mask[4];
    size_t hl = tcp_mode ? 0 : header(f, true);
    uint32_t m = next_mask();

    for (size_t i = 0; i < size; i++)
      pl[i] = (unsigned char)('a' + (s * 7 + i) % 26);
    memcpy(pl, &s, size < 8 ? size : 8);
    memcpy(mask, &m, 4);
    if (!tcp_mode)
      memcpy(f + hl - 4, mask, 4);
    for (size_t i = 0; i < size; i++)
      f[hl + i] = pl[i] ^ (tcp_mode ? 0 : mask[i & 3]);
  }
  memcpy(tmpl + NSLOT * fl, tmpl, NSLOT * fl);
}

/* EPOLLOUT only while a send is short: registered always, every ACK's
 * write-space wake-up would cost the kernel an epoll callback. */
static void watch_out(conn *c, bool on)
{
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (on ? EPOLLOUT : 0),
                           .data.ptr = c};

  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->want_out = on;
}

/* Sends what is queued and not yet out, straight from the template. */
static void flush_out(conn *c)
{
  uint64_t goal = c->queued * fl, span = (uint64_t)NSLOT * fl;

  while (c->tx < goal) {
    size_t pos = (size_t)(c->tx % span), n = (size_t)(goal - c->tx);
    ssize_t w;

    if (n > span)
      n = (size_t)span; /* the doubled template holds one span from pos */
    w = send(c->fd, tmpl + pos, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN)
        errors++;
      else if (!c->want_out)
        watch_out(c, true);
      return;
    }
    c->tx += (uint64_t)w;
  }
  if (c->want_out)
    watch_out(c, false);
}

/* Consumes whole echoes from c->in; returns how many. */
static uint64_t take_echoes(conn *c)
{
  size_t off = 0;
  uint64_t n = 0;

  while (c->in_len - off >= rl) {
    const unsigned char *p = c->in + off, *want;
    uint64_t slot = c->echoed % NSLOT, got = 0;

    want = payload + slot * size;
    if (!tcp_mode && (p[0] != 0x82 || p[1] != (rhl == 2   ? size
                                               : rhl == 4 ? 126
                                                          : 127)))
      errors++;
    memcpy(&got, p + rhl, size < 8 ? size : 8);
    if (memcmp(&got, want, size < 8 ? size : 8) != 0)
      errors++;
    if (next_mask() % SAMPLE == 0 && memcmp(p + rhl, want, size) != 0)
      errors++;
    c->echoed++;
    off += rl;
    n++;
  }
  if (off) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
  return n;
}

/* Reads what is there; a short read means the socket is drained (with
 * EPOLLET a later arrival raises a new edge), which saves the recv that
 * would only say EAGAIN. */
static int read_in(conn *c)
{
  for (;;) {
    if (c->in_cap - c->in_len < 65536) {
      c->in_cap = c->in_cap ? c->in_cap * 2 : 262144;
      if (!(c->in = realloc(c->in, c->in_cap)))
        exit(1);
    }
    size_t room = c->in_cap - c->in_len;
    ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
    if (r > 0) {
      c->in_len += (size_t)r;
      if ((size_t)r < room)
        return 0;
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
  if (!port || conns < 1 || pipeline < 1 || pipeline > NSLOT || size < 1)
    exit(2);
}

int main(int argc, char **argv)
{
  conn *cs;
  ep = epoll_create1(0);
  struct epoll_event evs[256];
  double t0, start = 0, end;
  uint64_t counted = 0;

  parse(argc, argv);
  build_template();
  if (!(cs = calloc((size_t)conns, sizeof(*cs))))
    return 1;
  for (int i = 0; i < conns; i++) {
    cs[i].fd = dial();
    if (!tcp_mode)
      handshake(&cs[i]);
    fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    cs[i].queued = (uint64_t)pipeline;
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
      if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        continue; /* only room to write: nothing to read */
      if (read_in(c) < 0) {
        fprintf(stderr, "ws-load: connection closed\n");
        return 1;
      }
      got = take_echoes(c);
      counted += got;
      c->queued += got;
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
