/* echo-client - an echo load generator that verifies every byte.
 *
 * Each thread runs its own epoll over its share of the connections. Each
 * connection keeps `pipeline` messages of `size` bytes in flight, sending
 * every message the window allows in one sendmsg; message
 * bytes come from a fixed pattern at an offset that depends on the
 * connection and the message number, so every echoed byte is checked
 * against what was sent. Reports messages/s, MB/s and p50/p99/p99.9/max
 * latency (from the send of a message's first byte to the receipt of its
 * last; the percentiles from 1 us buckets up to 100 ms, the max exact).
 * Runs of 2 s or more show a progress line on stderr once a second when
 * it is a terminal.
 *
 *   echo-client -p PORT [-H 127.0.0.1 | -U /path] [-c 50] [-P 1] [-s 64]
 *               [-d 5] [-w 0] [-g 1] [-t 1] [-n MSGS_PER_CONN] [--csv]
 *
 * -g: after the run, how many seconds of silence a connection may take to
 * bring its last replies before they count as lost (failed_conns).
 *
 * Exit status: 0 when every byte matched and every connection worked. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HIST_US                                                                \
  100000 /* 1 us buckets up to 100 ms, then one overflow bucket                \
          */
#define PATTERN_SPAN 251
#define IDLE_WAIT_MS 100 /* one epoll_wait without events */

typedef struct cfg {
  const char *host, *unix_path;
  int port, conns, pipeline, threads;
  size_t size;
  double duration, warmup;
  double grace; /* -g: silence after the stop before a reply counts lost */
  long long per_conn; /* stop after this many messages per connection */
  int csv;
} cfg;

typedef struct conn {
  int fd, id;
  long long sent, recvd; /* whole messages */
  size_t send_off;       /* bytes of message `sent` already written */
  size_t recv_off;       /* bytes of message `recvd` already read */
  uint64_t *t_sent;      /* send time of each in-flight message */
  int done;
} conn;

typedef struct worker {
  pthread_t th;
  int first, n;
  conn *c;
  uint64_t *hist;
  uint64_t max_us; /* the slowest round trip measured */
  long long msgs, errors;
  atomic_llong live_msgs; /* msgs, for the progress line (main thread) */
  int failed;
} worker;

static cfg C;
static unsigned char *pattern;
static atomic_int measuring, stopping, finished;

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const unsigned char *msg_bytes(const conn *c, long long m)
{
  return pattern + (size_t)((c->id * 7 + m) % PATTERN_SPAN);
}

static int dial(void)
{
  struct sockaddr_storage ss = {0};
  socklen_t len;
  int one = 1, fd;

  if (C.unix_path) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    sun->sun_family = AF_UNIX;
    snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", C.unix_path);
    len = sizeof(*sun);
  } else if (strchr(C.host, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)C.port);
    if (inet_pton(AF_INET6, C.host, &s6->sin6_addr) != 1)
      return -1;
    len = sizeof(*s6);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)C.port);
    if (inet_pton(AF_INET, C.host, &s4->sin_addr) != 1)
      return -1;
    len = sizeof(*s4);
  }
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
    close(fd);
    return -1;
  }
  if (!C.unix_path)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* May message number m be sent (the stop and -n limits)? */
static int may_send(long long m)
{
  if (atomic_load_explicit(&stopping, memory_order_relaxed))
    return 0;
  return C.per_conn <= 0 || m < C.per_conn;
}

static int want_more(const conn *c)
{
  return may_send(c->sent);
}

/* Writes what the window allows: every message that may be sent goes out in
 * one sendmsg (the iovecs point into the pattern, no copy), as a pipelining
 * client would batch them. Returns -1 on a broken connection. */
static int pump_send(conn *c)
{
  struct iovec iov[64];

  while (c->sent - c->recvd < C.pipeline && (c->send_off || want_more(c))) {
    struct msghdr mh = {.msg_iov = iov};
    long long m = c->sent;
    size_t off = c->send_off, bytes = 0;
    uint64_t t = now_ns();

    while (mh.msg_iovlen < sizeof(iov) / sizeof(iov[0]) &&
           m - c->recvd < C.pipeline && (off || may_send(m))) {
      if (off == 0) /* the first byte of message m leaves now */
        c->t_sent[m % C.pipeline] = t;
      iov[mh.msg_iovlen].iov_base = (void *)(msg_bytes(c, m) + off);
      iov[mh.msg_iovlen].iov_len = C.size - off;
      bytes += C.size - off;
      mh.msg_iovlen++;
      m++;
      off = 0;
    }
    ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
      return errno == EAGAIN || errno == EINTR ? 0 : -1;
    for (size_t left = (size_t)n; left > 0;) {
      size_t take = C.size - c->send_off;
      if (take > left)
        take = left;
      c->send_off += take;
      left -= take;
      if (c->send_off == C.size) {
        c->send_off = 0;
        c->sent++;
      }
    }
    if ((size_t)n < bytes)
      return 0; /* the socket is full: EPOLLOUT resumes */
  }
  return 0;
}

static int pump_recv(worker *w, conn *c)
{
  unsigned char buf[65536];

  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0)
      return -1;
    if (n < 0)
      return errno == EAGAIN ? 0 : -1;
    for (size_t i = 0; i < (size_t)n;) {
      /* Never more bytes than were sent. */
      size_t sent = c->recvd < c->sent ? C.size : c->send_off;
      if (c->recv_off >= sent) {
        w->errors++;
        return -1;
      }
      const unsigned char *m = msg_bytes(c, c->recvd);
      size_t take = sent - c->recv_off;
      if (take > (size_t)n - i)
        take = (size_t)n - i;
      if (memcmp(buf + i, m + c->recv_off, take) != 0) {
        w->errors++;
        return -1;
      }
      i += take;
      c->recv_off += take;
      if (c->recv_off == C.size) {
        uint64_t lat = (now_ns() - c->t_sent[c->recvd % C.pipeline]) / 1000;
        c->recv_off = 0;
        c->recvd++;
        if (atomic_load_explicit(&measuring, memory_order_relaxed)) {
          w->hist[lat < HIST_US ? lat : HIST_US]++;
          w->msgs++;
          if (lat > w->max_us)
            w->max_us = lat;
          atomic_store_explicit(&w->live_msgs, w->msgs, memory_order_relaxed);
        }
      }
    }
    if ((size_t)n < sizeof(buf))
      return 0;
  }
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  struct epoll_event ev[256];
  int ep = epoll_create1(EPOLL_CLOEXEC), open_conns = w->n, idle = 0;

  for (int i = 0; i < w->n; i++) {
    conn *c = &w->c[i];
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                            .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  }
  while (open_conns > 0) {
    int n = epoll_wait(ep, ev, 256, IDLE_WAIT_MS);
    for (int i = 0; i < n; i++) {
      conn *c = ev[i].data.ptr;
      if (c->done)
        continue;
      if (pump_recv(w, c) < 0 || pump_send(c) < 0) {
        w->failed++;
        c->done = 1;
        open_conns--;
        continue;
      }
      if (!want_more(c) && c->recvd == c->sent && c->send_off == 0) {
        c->done = 1;
        open_conns--;
      }
    }
    idle = n == 0 ? idle + 1 : 0;
    if (idle >= C.grace * 1000 / IDLE_WAIT_MS && atomic_load(&stopping)) {
      /* Replies that never came within -g seconds (1) of silence after the
       * stop count as failures (a loaded machine can stall a server for
       * 100 ms; a lossy link after an outage, TCP's backed-off
       * retransmission, for seconds). */
      for (int i = 0; i < w->n; i++)
        if (!w->c[i].done) {
          if (w->c[i].recvd != w->c[i].sent)
            w->failed++;
          w->c[i].done = 1;
          open_conns--;
        }
    }
  }
  close(ep);
  atomic_fetch_add(&finished, 1);
  return NULL;
}

static void usage(int st)
{
  fprintf(st ? stderr : stdout,
          "usage: echo-client -p PORT [-H HOST | -U PATH] [-c CONNS] "
          "[-P PIPELINE] [-s SIZE] [-d SECONDS] [-w WARMUP] [-g GRACE] "
          "[-t THREADS] "
          "[-n MSGS_PER_CONN] [--csv]\n");
  exit(st);
}

static void parse(int argc, char **argv)
{
  static const struct option lo[] = {{"csv", no_argument, 0, 'C'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int ch;

  C = (cfg){.host = "127.0.0.1",
            .conns = 1,
            .pipeline = 1,
            .threads = 1,
            .size = 64,
            .duration = 5,
            .grace = 1};
  while ((ch = getopt_long(argc, argv, "H:U:p:c:P:s:d:w:g:t:n:h", lo, 0)) !=
         -1) {
    switch (ch) {
    case 'H': C.host = optarg; break;
    case 'U': C.unix_path = optarg; break;
    case 'p': C.port = atoi(optarg); break;
    case 'c': C.conns = atoi(optarg); break;
    case 'P': C.pipeline = atoi(optarg); break;
    case 's': C.size = (size_t)atol(optarg); break;
    case 'd': C.duration = atof(optarg); break;
    case 'w': C.warmup = atof(optarg); break;
    case 'g': C.grace = atof(optarg); break;
    case 't': C.threads = atoi(optarg); break;
    case 'n': C.per_conn = atoll(optarg); break;
    case 'C': C.csv = 1; break;
    case 'h': usage(0); break;
    default: usage(2);
    }
  }
  if ((!C.unix_path && (C.port <= 0 || C.port > 65535)) || C.conns <= 0 ||
      C.pipeline <= 0 || C.size == 0 || C.threads <= 0 || C.duration <= 0 ||
      C.grace <= 0)
    usage(2);
  if (C.threads > C.conns)
    C.threads = C.conns;
}

static void sleep_s(double s)
{
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Waits secs (with until_done, until every worker has finished or secs
 * have passed). On a terminal, a run of 2 s or more prints a progress line
 * to stderr once a second, erased at the end so the result line stays
 * clean. */
static void run_for(double secs, int until_done, worker *w)
{
  int live = secs >= 2 && isatty(STDERR_FILENO);
  uint64_t start = now_ns(), next = start + 1000000000u;
  long long last = 0;

  for (;;) {
    double left = secs - (double)(now_ns() - start) / 1e9;
    if (left <= 0 || (until_done && atomic_load(&finished) >= C.threads))
      break;
    sleep_s(until_done && left > 0.01 ? 0.01 : left > 1 ? 1 : left);
    if (live && now_ns() >= next) {
      long long msgs = 0;
      for (int i = 0; i < C.threads; i++)
        msgs += atomic_load_explicit(&w[i].live_msgs, memory_order_relaxed);
      fprintf(stderr, "\r[%.0f/%.0f s] %lld msgs, %lld msgs/s\033[K",
              (double)(now_ns() - start) / 1e9, secs, msgs, msgs - last);
      last = msgs;
      next += 1000000000u;
    }
  }
  if (live)
    fputs("\r\033[K", stderr);
}

static uint64_t percentile(const uint64_t *h, uint64_t total, double p)
{
  uint64_t want = (uint64_t)((double)total * p), acc = 0;

  for (int i = 0; i <= HIST_US; i++) {
    acc += h[i];
    if (acc > want)
      return (uint64_t)i;
  }
  return HIST_US;
}

int main(int argc, char **argv)
{
  worker *w;
  conn *conns;
  uint64_t *hist, t0, t1, total = 0, max_us = 0;
  long long errors = 0, failed = 0;

  parse(argc, argv);
  pattern = malloc(C.size + PATTERN_SPAN);
  conns = calloc((size_t)C.conns, sizeof(*conns));
  w = calloc((size_t)C.threads, sizeof(*w));
  hist = calloc(HIST_US + 1, sizeof(*hist));
  if (!pattern || !conns || !w || !hist)
    return 1;
  for (size_t i = 0; i < C.size + PATTERN_SPAN; i++)
    pattern[i] = (unsigned char)(i * 131 + (i >> 7) + 17);
  for (int i = 0; i < C.conns; i++) {
    conns[i].id = i;
    conns[i].fd = dial();
    conns[i].t_sent = calloc((size_t)C.pipeline, sizeof(uint64_t));
    if (conns[i].fd < 0 || !conns[i].t_sent) {
      fprintf(stderr, "echo-client: connect %d failed: %s\n", i,
              strerror(errno));
      return 1;
    }
  }
  for (int i = 0, first = 0; i < C.threads; i++) {
    int n = C.conns / C.threads + (i < C.conns % C.threads);
    w[i] = (worker){.first = first, .n = n, .c = conns + first};
    w[i].hist = calloc(HIST_US + 1, sizeof(uint64_t));
    first += n;
  }
  atomic_store(&measuring, C.warmup <= 0);
  for (int i = 0; i < C.threads; i++)
    pthread_create(&w[i].th, NULL, worker_main, &w[i]);
  if (C.warmup > 0) {
    sleep_s(C.warmup);
    atomic_store(&measuring, 1);
  }
  t0 = now_ns();
  /* -n: the duration is a deadline; what is unfinished then fails. */
  run_for(C.duration, C.per_conn > 0, w);
  atomic_store(&stopping, 1);
  for (int i = 0; i < C.threads; i++) {
    pthread_join(w[i].th, NULL);
    for (int b = 0; b <= HIST_US; b++)
      hist[b] += w[i].hist[b];
    total += (uint64_t)w[i].msgs;
    if (w[i].max_us > max_us)
      max_us = w[i].max_us;
    errors += w[i].errors;
    failed += w[i].failed;
  }
  t1 = now_ns();
  {
    double secs = (double)(t1 - t0) / 1e9;
    double mps = (double)total / secs;
    double mbs = mps * (double)C.size / 1e6;
    if (C.csv)
      printf("%.0f,%.2f,%llu,%llu,%lld,%lld,%llu,%llu\n", mps, mbs,
             (unsigned long long)percentile(hist, total, 0.5),
             (unsigned long long)percentile(hist, total, 0.99), errors, failed,
             (unsigned long long)percentile(hist, total, 0.999),
             (unsigned long long)max_us);
    else
      printf("conns=%d pipeline=%d size=%zu msgs=%llu msgs/s=%.0f MB/s=%.2f "
             "p50_us=%llu p99_us=%llu verify_errors=%lld failed_conns=%lld "
             "p999_us=%llu max_us=%llu\n",
             C.conns, C.pipeline, C.size, (unsigned long long)total, mps, mbs,
             (unsigned long long)percentile(hist, total, 0.5),
             (unsigned long long)percentile(hist, total, 0.99), errors, failed,
             (unsigned long long)percentile(hist, total, 0.999),
             (unsigned long long)max_us);
  }
  for (int i = 0; i < C.conns; i++) {
    close(conns[i].fd);
    free(conns[i].t_sent);
  }
  for (int i = 0; i < C.threads; i++)
    free(w[i].hist);
  free(w);
  free(conns);
  free(hist);
  free(pattern);
  return errors || failed || total == 0 ? 1 : 0;
}
