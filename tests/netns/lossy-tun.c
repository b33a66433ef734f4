/* lossy-tun.c - a lossy link in user space, for kernels without sch_netem
 * (netns-test.sh uses tc netem when it can, this otherwise).
 *
 *   lossy-tun TUN_A TUN_B SEED
 *
 * Creates two TUN devices and moves every IP packet that one side sends
 * to the other, as netem would on both ends: delay 20 ms +- 5 ms (uniform),
 * 2% loss, 1% duplication, 1% reordering (sent at once, ahead of those
 * waiting), 10 Mbit/s per direction (a packet waits for the previous
 * one's serialization), a queue of at most 1000 packets (then tail drop).
 * The random choices come from SEED. The script moves each device into
 * its namespace; a device set down drops what is written to it. Prints
 * "ready" once both exist; runs until killed. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { MTU = 1500, QMAX = 1000 };
#define DELAY_US 20000
#define JITTER_US 5000
#define RATE_BPS 10000000.0

typedef struct pkt {
  uint64_t at; /* release time, us */
  uint64_t seq;
  uint16_t len;
  unsigned char data[MTU + 64];
} pkt;

typedef struct dir {
  int in, out;
  pkt *heap[QMAX];
  int n;
  uint64_t busy_until; /* the link's serialization clock */
} dir;

static uint64_t rng, seqno;
static uint64_t n_in, n_lost, n_dup, n_reord, n_tail;
static volatile sig_atomic_t done;

static void on_term(int sig)
{
  (void)sig;
  done = 1;
}

static uint64_t rnd(void)
{
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

static uint64_t now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool before(const pkt *a, const pkt *b)
{
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void push(dir *d, pkt *p)
{
  int i = d->n++;

  while (i > 0 && before(p, d->heap[(i - 1) / 2])) {
    d->heap[i] = d->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  d->heap[i] = p;
}

static pkt *pop(dir *d)
{
  pkt *top = d->heap[0], *last = d->heap[--d->n];
  int i = 0;

  for (;;) {
    int c = 2 * i + 1;
    if (c >= d->n)
      break;
    if (c + 1 < d->n && before(d->heap[c + 1], d->heap[c]))
      c++;
    if (!before(d->heap[c], last))
      break;
    d->heap[i] = d->heap[c];
    i = c;
  }
  if (d->n)
    d->heap[i] = last;
  return top;
}

static void enqueue(dir *d, const unsigned char *b, size_t len, uint64_t t)
{
  uint64_t ser = (uint64_t)((double)len * 8.0 * 1e6 / RATE_BPS);
  pkt *p;

  if (d->n >= QMAX || !(p = malloc(sizeof(*p)))) {
    n_tail++; /* tail drop */
    return;
  }
  d->busy_until = (d->busy_until > t ? d->busy_until : t) + ser;
  p->at = d->busy_until;
  if (rnd() % 100 != 0) /* 1%: reordered, no delay */
    p->at += DELAY_US - JITTER_US + rnd() % (2 * JITTER_US + 1);
  else
    n_reord++;
  p->seq = seqno++;
  p->len = (uint16_t)len;
  memcpy(p->data, b, len);
  push(d, p);
}

/* Takes one packet off the device: false when there was none. */
static bool receive(dir *d)
{
  unsigned char b[MTU + 64];
  ssize_t n = read(d->in, b, sizeof(b));
  uint64_t t = now_us();

  if (n <= 0)
    return false;
  n_in++;
  if (rnd() % 100 < 2) { /* 2% loss */
    n_lost++;
    return true;
  }
  enqueue(d, b, (size_t)n, t);
  if (rnd() % 100 == 0) { /* 1% duplicated */
    n_dup++;
    enqueue(d, b, (size_t)n, t);
  }
  return true;
}

static void deliver(dir *d, uint64_t t)
{
  while (d->n && d->heap[0]->at <= t) {
    pkt *p = pop(d);
    /* A device that is down refuses: the packet is lost, as on a wire. */
    (void)!write(d->out, p->data, p->len);
    free(p);
  }
}

static int tun_open(const char *name)
{
  struct ifreq ifr;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

  if (fd < 0)
    return -1;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

int main(int argc, char **argv)
{
  dir d[2];
  int a, b;

  if (argc != 4) {
    fprintf(stderr, "usage: lossy-tun TUN_A TUN_B SEED\n");
    return 2;
  }
  rng = strtoull(argv[3], NULL, 10) * 2654435761u + 88172645463325252u;
  if ((a = tun_open(argv[1])) < 0 || (b = tun_open(argv[2])) < 0) {
    perror("lossy-tun: /dev/net/tun");
    return 1;
  }
  d[0] = (dir){.in = a, .out = b};
  d[1] = (dir){.in = b, .out = a};
  signal(SIGTERM, on_term);
  printf("ready\n");
  fflush(stdout);
  while (!done) {
    struct pollfd p[2] = {{.fd = a, .events = POLLIN},
                          {.fd = b, .events = POLLIN}};
    uint64_t t = now_us(), next = t + 100000;
    for (int i = 0; i < 2; i++)
      if (d[i].n && d[i].heap[0]->at < next)
        next = d[i].heap[0]->at;
    poll(p, 2, next > t ? (int)((next - t + 999) / 1000) : 0);
    for (int i = 0; i < 2; i++)
      if (p[i].revents & POLLIN)
        for (int k = 0; k < 64 && receive(&d[i]); k++)
          ;
    t = now_us();
    deliver(&d[0], t);
    deliver(&d[1], t);
  }
  printf("packets %llu: lost %llu, duplicated %llu, reordered %llu, "
         "tail-dropped %llu\n",
         (unsigned long long)n_in, (unsigned long long)n_lost,
         (unsigned long long)n_dup, (unsigned long long)n_reord,
         (unsigned long long)n_tail);
  return 0;
}
