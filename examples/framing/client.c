/* framing-client - sends frames of random sizes, split at random points,
 * and verifies every reply (the same length, the payload reversed).
 *
 *   framing-client -p PORT [-c CONNS] [-n FRAMES] [-s MAX_SIZE] [-S SEED]
 *                  [-t SECONDS]
 *
 * Payload bytes are a function of (connection, frame, index), so replies
 * are checked byte by byte as they stream in, without keeping copies.
 * Exit status 0 when every reply matched, 1 otherwise. */
#include "frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

typedef struct conn {
  int fd;
  uint64_t rng;              /* drives sizes and split points */
  long sent, recvd;          /* whole frames */
  uint8_t *buf;              /* the frame being sent */
  size_t len, off;           /* its size and bytes written */
  uint32_t *sizes;           /* payload size of each frame sent */
  uint8_t hdr[FRAME_HEADER]; /* reply header being read */
  size_t rpos;               /* bytes of the current reply read */
} conn;

static int nconn = 4, port;
static long nframes = 1000;
static size_t max_size = 65536;

static uint64_t next(uint64_t *s)
{
  /* splitmix64: small, and good enough to vary sizes and splits */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint8_t payload_byte(int ci, long frame, size_t i)
{
  uint64_t s = (uint64_t)ci << 48 ^ (uint64_t)frame << 24 ^ i;
  return (uint8_t)next(&s);
}

/* Mostly small frames, some empty, some up to the maximum. */
static uint32_t pick_size(conn *c)
{
  uint64_t r = next(&c->rng) % 100;
  size_t cap = r < 10 ? 0 : r < 40 ? 16 : r < 85 ? 4096 : max_size;

  if (cap > max_size)
    cap = max_size;
  return (uint32_t)(next(&c->rng) % (cap + 1));
}

static void build_frame(conn *c, int ci)
{
  uint32_t n = pick_size(c);

  c->sizes[c->sent] = n;
  frame_put_header(c->buf, n);
  for (size_t i = 0; i < n; i++)
    c->buf[FRAME_HEADER + i] = payload_byte(ci, c->sent, i);
  c->len = FRAME_HEADER + n;
  c->off = 0;
}

/* Writes a random-sized piece of the current frame: 1..7 bytes (which
 * splits headers), up to 1000, or the rest. 0, or -1 on error. */
static int send_some(conn *c, int ci)
{
  uint64_t r = next(&c->rng) % 3;
  size_t left = c->len - c->off, n;
  ssize_t w;

  n = r == 0 ? 1 + next(&c->rng) % 7 : r == 1 ? 1 + next(&c->rng) % 1000 : left;
  if (n > left)
    n = left;
  w = send(c->fd, c->buf + c->off, n, MSG_NOSIGNAL);
  if (w < 0)
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  c->off += (size_t)w;
  if (c->off == c->len && ++c->sent < nframes)
    build_frame(c, ci);
  return 0;
}

/* Checks received bytes against the expected replies. */
static int check(conn *c, int ci, const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (c->recvd >= nframes) {
      fprintf(stderr, "conn %d: bytes after the last reply\n", ci);
      return -1;
    }
    if (c->rpos < FRAME_HEADER) {
      c->hdr[c->rpos++] = p[i];
    } else {
      uint32_t len = c->sizes[c->recvd];
      size_t k = c->rpos++ - FRAME_HEADER;
      uint8_t want = payload_byte(ci, c->recvd, len - 1 - k);
      if (p[i] != want) {
        fprintf(stderr, "conn %d frame %ld byte %zu: got %u, want %u\n", ci,
                c->recvd, k, p[i], want);
        return -1;
      }
    }
    if (c->rpos == FRAME_HEADER &&
        frame_get_header(c->hdr) != c->sizes[c->recvd]) {
      fprintf(stderr, "conn %d frame %ld: reply length %u, want %u\n", ci,
              c->recvd, frame_get_header(c->hdr), c->sizes[c->recvd]);
      return -1;
    }
    if (c->rpos >= FRAME_HEADER &&
        c->rpos == FRAME_HEADER + (size_t)c->sizes[c->recvd]) {
      c->recvd++;
      c->rpos = 0;
    }
  }
  return 0;
}

static int dial(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

  if (fd < 0)
    return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
      errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

static long long now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int run(conn *cs, long long deadline)
{
  static uint8_t rbuf[65536];
  struct pollfd pf[MAX_CONNS];
  int left = nconn;

  while (left > 0) {
    long long wait = deadline - now_ms();
    int n;

    for (int i = 0; i < nconn; i++) {
      conn *c = &cs[i];
      pf[i].fd = c->recvd < nframes ? c->fd : -1;
      pf[i].events = POLLIN | (c->sent < nframes ? POLLOUT : 0);
    }
    if (wait <= 0 || (n = poll(pf, (nfds_t)nconn, (int)wait)) == 0) {
      fprintf(stderr, "timed out\n");
      return -1;
    }
    if (n < 0 && errno != EINTR)
      return -1;
    for (int i = 0; n > 0 && i < nconn; i++) {
      conn *c = &cs[i];
      if (pf[i].revents & POLLOUT && send_some(c, i) < 0) {
        fprintf(stderr, "conn %d: send: %s\n", i, strerror(errno));
        return -1;
      }
      if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          fprintf(stderr, "conn %d: %s after %ld replies\n", i,
                  r ? strerror(errno) : "EOF", c->recvd);
          return -1;
        }
        if (r > 0 && check(c, i, rbuf, (size_t)r) < 0)
          return -1;
        if (c->recvd == nframes)
          left--;
      }
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  conn cs[MAX_CONNS] = {{0}};
  uint64_t seed = 1;
  long timeout = 20;
  int opt, st;

  while ((opt = getopt(argc, argv, "p:c:n:s:S:t:")) != -1) {
    switch (opt) {
    case 'p': port = atoi(optarg); break;
    case 'c': nconn = atoi(optarg); break;
    case 'n': nframes = atol(optarg); break;
    case 's': max_size = strtoul(optarg, NULL, 10); break;
    case 'S': seed = strtoull(optarg, NULL, 10); break;
    case 't': timeout = atol(optarg); break;
    default: return 2;
    }
  }
  if (port <= 0 || port > 65535 || nconn < 1 || nconn > MAX_CONNS ||
      nframes < 1 || max_size > (1u << 30) || timeout < 1) {
    fprintf(stderr,
            "usage: %s -p PORT [-c 1..%d] [-n FRAMES] [-s MAX_SIZE] "
            "[-S SEED] [-t SECONDS]\n",
            argv[0], MAX_CONNS);
    return 2;
  }
  for (int i = 0; i < nconn; i++) {
    cs[i].rng = seed * 1000003u + (uint64_t)i;
    cs[i].buf = malloc(FRAME_HEADER + max_size);
    cs[i].sizes = malloc((size_t)nframes * sizeof(uint32_t));
    if (!cs[i].buf || !cs[i].sizes || (cs[i].fd = dial()) < 0) {
      fprintf(stderr, "conn %d: %s\n", i, strerror(errno));
      return 1;
    }
    build_frame(&cs[i], i);
  }
  st = run(cs, now_ms() + timeout * 1000);
  if (st == 0) {
    unsigned long long bytes = 0;
    for (int i = 0; i < nconn; i++)
      for (long f = 0; f < nframes; f++)
        bytes += cs[i].sizes[f];
    printf("ok: %d connections x %ld frames, %llu payload bytes verified\n",
           nconn, nframes, bytes);
  }
  for (int i = 0; i < nconn; i++) {
    close(cs[i].fd);
    free(cs[i].buf);
    free(cs[i].sizes);
  }
  return st ? 1 : 0;
}
