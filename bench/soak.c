/* soak.c - a long mixed load on one gev server (2 worker loops), with the
 * process's RSS, open fds and threads sampled every 10 s:
 *   churn      a thread that connects, does one round trip and closes
 *   pipelined  8 connections, 16 messages of 512 B in flight each
 *   slow       4 readers that take 4 KiB per millisecond of 256 KiB echoes
 *   push       a thread that gev_conn_send's to 16 connections every 10 ms
 *   timers     every connection has a 50 ms periodic timer (cancelled in
 *              on_close) and the acceptor a 20 ms job
 *
 *   soak [-d SECONDS] (default 600)
 *
 * Every echoed byte is checked. At the end: the samples after the first
 * minute (the warm-up) must be flat: RSS within 10% (+2 MB) of the first
 * of them, fds and threads unchanged. Exit 1 otherwise or on a wrong byte. */
#include <gev/gev.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PUSHED = 16 };

static gev_server *srv;
static int port, duration = 600;
static atomic_bool stop;
static atomic_long roundtrips, churned, pushes, ticks, bad;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gev_conn *pushed[PUSHED];

static void tick(void *arg)
{
  (void)arg;
  atomic_fetch_add(&ticks, 1);
}

static void on_connect(gev_conn *c)
{
  gev_timer_id t = gev_loop_run_every(gev_conn_loop(c), 50, tick, NULL);

  gev_conn_set_context(c, (void *)(uintptr_t)t);
}

static void on_close(gev_conn *c)
{
  gev_loop_cancel(gev_conn_loop(c),
                  (gev_timer_id)(uintptr_t)gev_conn_context(c));
  pthread_mutex_lock(&mu);
  for (int i = 0; i < PUSHED; i++)
    if (pushed[i] == c) {
      pushed[i] = NULL;
      gev_conn_unref(c);
    }
  pthread_mutex_unlock(&mu);
}

/* 'P' as the first byte: a push target; otherwise echo. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  char first;

  /* A lone 'P': a push target. (Anything else is echoed, a lone byte
   * of another stream too.) */
  if (ringbuffer_len(in) == 1 && ringbuffer_read(in, &first, 1) == 1) {
    if (first != 'P') {
      ringbuffer_write(out, &first, 1);
      return;
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < PUSHED; i++)
      if (!pushed[i]) {
        gev_conn_ref(c);
        pushed[i] = c;
        break;
      }
    pthread_mutex_unlock(&mu);
    return;
  }
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);
  ringbuffer_move(out, in, lim > used ? lim - used : 0);
}

static int dial(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  struct timeval tv = {.tv_sec = 10};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

static bool io_all(int fd, void *p, size_t n, bool rd)
{
  for (size_t off = 0; off < n;) {
    ssize_t r = rd ? read(fd, (char *)p + off, n - off)
                   : write(fd, (char *)p + off, n - off);
    if (r <= 0)
      return false;
    off += (size_t)r;
  }
  return true;
}

static void check(const unsigned char *a, const unsigned char *b, size_t n)
{
  if (memcmp(a, b, n))
    atomic_fetch_add(&bad, 1);
}

static void *churn(void *arg)
{
  unsigned char m[64], r[64];

  (void)arg;
  while (!atomic_load(&stop)) {
    int fd = dial();
    if (fd < 0)
      continue;
    memset(m, 'c', sizeof(m));
    if (io_all(fd, m, sizeof(m), false) && io_all(fd, r, sizeof(r), true))
      check(m, r, sizeof(m));
    close(fd);
    atomic_fetch_add(&churned, 1);
  }
  return NULL;
}

static void *pipelined(void *arg)
{
  unsigned char m[16 * 512], r[16 * 512];
  int fd = dial();
  unsigned seed = (unsigned)(uintptr_t)arg;

  while (fd >= 0 && !atomic_load(&stop)) {
    for (size_t i = 0; i < sizeof(m); i++)
      m[i] = (unsigned char)(seed++ * 31u);
    if (!io_all(fd, m, sizeof(m), false) || !io_all(fd, r, sizeof(r), true))
      break;
    check(m, r, sizeof(m));
    atomic_fetch_add(&roundtrips, 16);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

static void *slow(void *arg)
{
  static unsigned char m[256 * 1024];
  unsigned char r[4096];
  int fd = dial();

  (void)arg;
  for (size_t i = 0; i < sizeof(m); i++)
    m[i] = (unsigned char)(i * 7u);
  while (fd >= 0 && !atomic_load(&stop)) {
    if (!io_all(fd, m, sizeof(m), false))
      break;
    for (size_t off = 0; off < sizeof(m); off += sizeof(r)) {
      nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
      if (!io_all(fd, r, sizeof(r), true))
        goto out;
      check(m + off, r, sizeof(r));
    }
    atomic_fetch_add(&roundtrips, 1);
  }
out:
  if (fd >= 0)
    close(fd);
  return NULL;
}

/* Holds PUSHED connections that only receive, and sends to them from this
 * thread through the library (cross-thread). */
static void *push(void *arg)
{
  int fds[PUSHED];
  char buf[4096];

  (void)arg;
  for (int i = 0; i < PUSHED; i++) {
    fds[i] = dial();
    if (fds[i] >= 0 && write(fds[i], "P", 1) != 1)
      atomic_fetch_add(&bad, 1);
  }
  while (!atomic_load(&stop)) {
    nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < PUSHED; i++)
      if (pushed[i] && gev_conn_send(pushed[i], "push\n", 5) == 0)
        atomic_fetch_add(&pushes, 1);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < PUSHED; i++)
      if (fds[i] >= 0)
        while (recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
          ;
  }
  for (int i = 0; i < PUSHED; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  return NULL;
}

static int count_dir(const char *p)
{
  DIR *d = opendir(p);
  int n = 0;

  if (!d)
    return -1;
  while (readdir(d))
    n++;
  closedir(d);
  return n - 2;
}

static long rss_kb(void)
{
  long pages, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");

  if (f && fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = 0;
  if (f)
    fclose(f);
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *serve(void *arg)
{
  gev_server_start(arg);
  return NULL;
}

int main(int argc, char **argv)
{
  gev_handler h = {
      .on_connect = on_connect, .on_message = on_message, .on_close = on_close};
  gev_options o = {.address = "127.0.0.1:0", .num_loops = 2};
  pthread_t st, th[15];
  int n = 0, ch, samples = 0;
  long rss_ref = 0;
  int fds_ref = 0, thr_ref = 0;
  bool flat = true;

  while ((ch = getopt(argc, argv, "d:")) != -1)
    if (ch == 'd')
      duration = atoi(optarg);
  if (gev_server_new(&srv, &h, &o) < 0)
    return 1;
  port = gev_server_port(srv);
  pthread_create(&st, NULL, serve, srv);
  gev_server_run_every(srv, 20, tick, NULL);
  pthread_create(&th[n++], NULL, churn, NULL);
  for (int i = 0; i < 8; i++)
    pthread_create(&th[n++], NULL, pipelined, (void *)(uintptr_t)(i * 1000));
  for (int i = 0; i < 4; i++)
    pthread_create(&th[n++], NULL, slow, NULL);
  pthread_create(&th[n++], NULL, push, NULL);
  for (int t = 10; t <= duration; t += 10) {
    sleep(10);
    long rss = rss_kb();
    int fds = count_dir("/proc/self/fd"), thr = count_dir("/proc/self/task");
    printf("t=%4ds rss_kb=%ld fds=%d threads=%d roundtrips=%ld churned=%ld "
           "pushes=%ld ticks=%ld bad=%ld\n",
           t, rss, fds, thr, atomic_load(&roundtrips), atomic_load(&churned),
           atomic_load(&pushes), atomic_load(&ticks), atomic_load(&bad));
    fflush(stdout);
    if (t == 60 || (duration < 60 && samples == 0)) {
      rss_ref = rss, fds_ref = fds, thr_ref = thr;
    } else if (rss_ref) {
      /* The churn thread may hold one connection more or less. */
      if (rss > rss_ref + rss_ref / 10 + 2048 || fds > fds_ref + 2 ||
          thr != thr_ref)
        flat = false;
    }
    samples++;
  }
  atomic_store(&stop, true);
  for (int i = 0; i < n; i++)
    pthread_join(th[i], NULL);
  gev_server_stop(srv);
  pthread_join(st, NULL);
  gev_server_free(srv);
  printf("%s: %d samples, %s after warm-up, %ld wrong bytes\n",
         flat && !atomic_load(&bad) ? "ok" : "FAILED", samples,
         flat ? "flat" : "NOT flat", atomic_load(&bad));
  return flat && !atomic_load(&bad) ? 0 : 1;
}
