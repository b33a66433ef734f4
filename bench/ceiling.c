/* ceiling.c - the most connections this machine allows, held by one gev
 * server across 2 worker loops, with a push to every one of them each
 * second; RSS and CPU sampled every second; then all closed.
 *
 *   ceiling [-s SECONDS_HELD] [-m MARGIN] [-l LOOPS]
 *
 * The limit is the hard RLIMIT_NOFILE, measured (getrlimit) and raised to
 * for both processes: the server (this one) and the client (a forked child
 * holding the other ends, so each process spends one fd per connection).
 * Connections = hard limit - MARGIN (default 100: the loops' epoll and
 * eventfd, the listener, stdio, the pipe). One line per second, then a
 * summary; exit 1 when a connection failed or a push went missing. */
#include <gev/gev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { PUSH_LEN = 16 };

static gev_server *srv;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gev_conn **conns;
static int nconns, cap, pushes;
static atomic_long push_fail;

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long rss_kb(void)
{
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");

  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
      rss = 0;
    fclose(f);
  }
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void on_connect(gev_conn *c)
{
  pthread_mutex_lock(&mu);
  if (nconns < cap) {
    gev_conn_ref(c);
    conns[nconns++] = c;
  }
  pthread_mutex_unlock(&mu);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c, (void)out;
  ringbuffer_retrieve_all(in);
}

/* On the acceptor loop, every second: cross-thread sends to all. */
static void push_all(void *arg)
{
  char msg[PUSH_LEN];

  (void)arg;
  memset(msg, 'p', sizeof(msg));
  msg[PUSH_LEN - 1] = '\n';
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nconns; i++)
    if (gev_conn_send(conns[i], msg, sizeof(msg)) < 0)
      atomic_fetch_add(&push_fail, 1);
  pushes++;
  pthread_mutex_unlock(&mu);
}

static void *serve(void *arg)
{
  gev_server_start(arg);
  return NULL;
}

/* The client: opens n connections (a few hundred at a time in flight),
 * then reads pushes until the parent says stop (a byte on `ctl`), closes
 * everything and reports the bytes it read on `res`. */
static int client(int port, int n, int ctl, int res)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  int ep = epoll_create1(0), *fds = calloc((size_t)n, sizeof(int)), open_n = 0;
  long long bytes = 0;
  char buf[4096];

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
      break;
    fcntl(fds[i], F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    open_n++;
  }
  if (write(res, &open_n, sizeof(open_n)) != sizeof(open_n))
    return 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ctl};
  epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &ev);
  for (bool stop = false; !stop;) {
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, 1000);
    for (int i = 0; i < k; i++) {
      ssize_t r;
      if (evs[i].data.fd == ctl) {
        stop = true;
        continue;
      }
      while ((r = read(evs[i].data.fd, buf, sizeof(buf))) > 0)
        bytes += r;
    }
  }
  for (int i = 0; i < open_n; i++)
    close(fds[i]);
  return write(res, &bytes, sizeof(bytes)) == sizeof(bytes) ? 0 : 1;
}

int main(int argc, char **argv)
{
  int held = 10, margin = 100, loops = 2, ctl[2], res[2], opened = 0, ch;
  struct rlimit rl;
  long long bytes = 0;
  pid_t pid;

  while ((ch = getopt(argc, argv, "s:m:l:")) != -1) {
    if (ch == 's')
      held = atoi(optarg);
    else if (ch == 'm')
      margin = atoi(optarg);
    else if (ch == 'l')
      loops = atoi(optarg);
    else
      return 2;
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  cap = (int)rl.rlim_max - margin;
  conns = calloc((size_t)cap, sizeof(*conns));
  printf("hard RLIMIT_NOFILE %llu: %d connections, %d loops, held %d s\n",
         (unsigned long long)rl.rlim_max, cap, loops, held);
  gev_handler h = {.on_connect = on_connect, .on_message = on_message};
  gev_options o = {
      .address = "127.0.0.1:0", .num_loops = loops, .backlog = 4096};
  if (gev_server_new(&srv, &h, &o) < 0 || pipe(ctl) || pipe(res))
    return 1;
  pthread_t t;
  pthread_create(&t, NULL, serve, srv);
  double t0 = now_s(), c0 = cpu_s();
  long rss0 = rss_kb();
  fflush(stdout);
  if ((pid = fork()) == 0)
    _exit(client(gev_server_port(srv), cap, ctl[0], res[1]));
  if (read(res[0], &opened, sizeof(opened)) != sizeof(opened))
    return 1;
  for (int i = 0; i < 200 && gev_server_conn_count(srv) < opened; i++)
    usleep(50000);
  printf("open: %d of %d in %.1f s, server RSS %.1f MB (%.2f KB per "
         "connection)\n",
         gev_server_conn_count(srv), cap, now_s() - t0, rss_kb() / 1024.0,
         (double)(rss_kb() - rss0) / (gev_server_conn_count(srv) + 1));
  gev_timer_id job = gev_server_run_every(srv, 1000, push_all, NULL);
  double tp = now_s(), cp = cpu_s();
  for (int s = 1; s <= held; s++) {
    sleep(1);
    double tn = now_s(), cn = cpu_s();
    printf("t=%2ds conns=%d rss_mb=%.1f cpu=%.1f%% pushes=%d\n", s,
           gev_server_conn_count(srv), rss_kb() / 1024.0,
           100.0 * (cn - cp) / (tn - tp), pushes);
    fflush(stdout);
    tp = tn, cp = cn;
  }
  gev_server_cancel(srv, job);
  double tc = now_s();
  if (write(ctl[1], "x", 1) != 1 ||
      read(res[0], &bytes, sizeof(bytes)) != sizeof(bytes))
    return 1;
  waitpid(pid, NULL, 0);
  for (int i = 0; i < 600 && gev_server_conn_count(srv) > 0; i++)
    usleep(50000);
  int left = gev_server_conn_count(srv);
  printf("closed: %d left after %.1f s; client read %lld bytes (%d pushes x "
         "%d conns x %d = %lld expected at most); push failures %ld; "
         "total CPU %.1f s\n",
         left, now_s() - tc, bytes, pushes, opened, PUSH_LEN,
         (long long)pushes * opened * PUSH_LEN, atomic_load(&push_fail),
         cpu_s() - c0);
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nconns; i++)
    gev_conn_unref(conns[i]);
  nconns = 0;
  pthread_mutex_unlock(&mu);
  gev_server_stop(srv);
  pthread_join(t, NULL);
  gev_server_free(srv);
  free(conns);
  bool ok = opened == cap && left == 0 &&
            bytes >= (long long)(pushes - 1) * opened * PUSH_LEN;
  printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
