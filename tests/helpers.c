/* helpers.c - see helpers.h. */
#include "helpers.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

uint64_t th_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t th_cpu_ms(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000u +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000u;
}

static void *server_main(void *arg)
{
  th_server *t = arg;
  t->start_result = gev_server_start(t->s);
  return NULL;
}

th_server *th_start(const gev_handler *h, gev_options *opt)
{
  th_server *t = calloc(1, sizeof(*t));
  pthread_t *th = calloc(1, sizeof(*th));
  int r;

  ck_assert(t && th);
  if (!opt->address)
    opt->address = "127.0.0.1:0";
  r = gev_server_new(&t->s, h, opt);
  ck_assert_msg(r == 0, "gev_server_new(%s): %s", opt->address,
                gev_strerror(r));
  t->port = gev_server_port(t->s);
  t->thread = th;
  ck_assert_int_eq(pthread_create(th, NULL, server_main, t), 0);
  return t;
}

void th_stop(th_server *t)
{
  pthread_t *th = t->thread;
  struct timespec ts;

  gev_server_stop(t->s);
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 20;
  ck_assert_msg(pthread_timedjoin_np(*th, NULL, &ts) == 0,
                "gev_server_start did not return within 20 s of stop");
  ck_assert_int_eq(t->start_result, 0);
  gev_server_free(t->s);
  free(th);
  free(t);
}

static void set_timeouts(int fd)
{
  struct timeval tv = {10, 0};
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int th_connect_addr(const char *addr)
{
  struct sockaddr_storage ss = {0};
  socklen_t len;
  char host[128];
  int fd, port;

  if (strncmp(addr, "unix:", 5) == 0) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    sun->sun_family = AF_UNIX;
    strncpy(sun->sun_path, addr + 5, sizeof(sun->sun_path) - 1);
    len = sizeof(*sun);
    if (addr[5] == '@') { /* abstract: a leading NUL, no terminator */
      sun->sun_path[0] = '\0';
      len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                        strlen(addr + 5));
    }
  } else if (addr[0] == '[') {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    const char *end = strchr(addr, ']');
    if (!end || (size_t)(end - addr - 1) >= sizeof(host))
      return -1;
    memcpy(host, addr + 1, (size_t)(end - addr - 1));
    host[end - addr - 1] = '\0';
    port = atoi(end + 2);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
      return -1;
    len = sizeof(*s6);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host))
      return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
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
  set_timeouts(fd);
  return fd;
}

int th_connect(int port)
{
  char a[64];
  snprintf(a, sizeof(a), "127.0.0.1:%d", port);
  return th_connect_addr(a);
}

bool th_write_all(int fd, const void *p, size_t n)
{
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    c += w;
    n -= (size_t)w;
  }
  return true;
}

bool th_read_exact(int fd, void *p, size_t n)
{
  char *c = p;
  while (n > 0) {
    ssize_t r = recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    c += r;
    n -= (size_t)r;
  }
  return true;
}

bool th_wait_eof(int fd, int timeout_ms)
{
  uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
  char buf[4096];

  while (th_now_ms() < end) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 50) <= 0)
      continue;
    ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno == ECONNRESET))
      return true;
  }
  return false;
}

bool th_wait_until(bool (*pred)(void *arg), void *arg, int timeout_ms)
{
  uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

  for (;;) {
    if (pred(arg))
      return true;
    if (th_now_ms() >= end)
      return false;
    usleep(1000);
  }
}

bool th_wait_int(const volatile int *v, int want, int timeout_ms)
{
  uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

  for (;;) {
    if (__atomic_load_n(v, __ATOMIC_SEQ_CST) >= want)
      return true;
    if (th_now_ms() >= end)
      return false;
    usleep(1000);
  }
}

static int count_dir(const char *path)
{
  DIR *d = opendir(path);
  struct dirent *e;
  int n = 0;

  if (!d)
    return -1;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

int th_count_fds(void)
{
  return count_dir("/proc/self/fd") - 1; /* the DIR's own fd */
}

static bool threads_at_most(void *arg)
{
  return th_count_threads() <= *(int *)arg;
}

bool th_wait_threads(int max, int timeout_ms)
{
  return th_wait_until(threads_at_most, &max, timeout_ms);
}

static void *noop_thread(void *arg)
{
  return arg;
}

static void start_noop_thread(void)
{
  pthread_t th;

  if (pthread_create(&th, NULL, noop_thread, NULL) == 0)
    pthread_join(th, NULL);
}

int th_count_threads(void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;

  /* ThreadSanitizer starts a background thread of its own at the first
   * pthread_create: let that happen before anyone takes a baseline. */
  pthread_once(&once, start_noop_thread);
  return count_dir("/proc/self/task");
}

int th_count_threads_named(const char *name)
{
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  char path[300], comm[32];
  int n = 0;

  if (!d)
    return -1;
  while ((e = readdir(d))) {
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
    if (!(f = fopen(path, "r")))
      continue; /* the thread ended meanwhile */
    if (fgets(comm, sizeof(comm), f)) {
      comm[strcspn(comm, "\n")] = '\0';
      n += strcmp(comm, name) == 0;
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

static bool named_at_most(void *arg)
{
  const th_named *w = arg;

  return th_count_threads_named(w->name) <= w->max;
}

bool th_wait_threads_named(const char *name, int max, int timeout_ms)
{
  th_named w = {name, max};

  return th_wait_until(named_at_most, &w, timeout_ms);
}

void th_fill(void *p, size_t n, uint32_t seed)
{
  unsigned char *c = p;
  uint32_t x = seed * 2654435761u + 1;

  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c[i] = (unsigned char)x;
  }
}

int th_echo_move(ringbuffer *in, ringbuffer *out)
{
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);

  return ringbuffer_move(out, in, lim > used ? lim - used : 0) < 0;
}

bool th_echo_roundtrip(int fd, size_t n, uint32_t seed)
{
  char *b = malloc(n), *r = malloc(n);
  bool ok;

  ck_assert(b && r);
  th_fill(b, n, seed);
  ok =
      th_write_all(fd, b, n) && th_read_exact(fd, r, n) && memcmp(b, r, n) == 0;
  free(b);
  free(r);
  return ok;
}

Suite *th_suite(const char *name, const th_case *cases, size_t n)
{
  Suite *s = suite_create(name);

  for (size_t i = 0; i < n; i++) {
    TCase *tc = tcase_create(cases[i].name);
    tcase_set_timeout(tc, cases[i].timeout);
    tcase_add_test(tc, cases[i].fn);
    suite_add_tcase(s, tc);
  }
  return s;
}

int th_run(Suite *s)
{
  SRunner *sr = srunner_create(s);
  int failed;

  srunner_run_all(sr, CK_ENV);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

int th_ld(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_SEQ_CST);
}

void th_st(int *v, int x)
{
  __atomic_store_n(v, x, __ATOMIC_SEQ_CST);
}

void th_inc(int *v)
{
  __atomic_fetch_add(v, 1, __ATOMIC_SEQ_CST);
}

int th_connects, th_closes, th_violations;

void th_count_connect(gev_conn *c)
{
  (void)c;
  th_inc(&th_connects);
}

void th_count_close(gev_conn *c)
{
  (void)c;
  th_inc(&th_closes);
}

void th_echo_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  if (th_echo_move(in, out))
    th_inc(&th_violations);
}

const gev_handler th_echo_handler = {th_count_connect, th_echo_msg,
                                     th_count_close};

void th_reset_counters(void)
{
  th_st(&th_connects, 0);
  th_st(&th_closes, 0);
  th_st(&th_violations, 0);
}

void *th_join(pthread_t t, int seconds)
{
  struct timespec ts;
  void *ret = NULL;

  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += seconds;
  ck_assert_msg(pthread_timedjoin_np(t, &ret, &ts) == 0,
                "thread did not finish within %d s", seconds);
  return ret;
}

/* ---- loops, listeners --------------------------------------------------- */

typedef struct in_loop_call {
  void (*fn)(void *);
  void *arg;
  int done;
} in_loop_call;

static void in_loop_trampoline(void *arg)
{
  in_loop_call *k = arg;
  k->fn(k->arg);
  th_st(&k->done, 1);
}

void th_noop(void *arg)
{
  (void)arg;
}

void th_run_in_loop(gev_loop *l, void (*fn)(void *), void *arg)
{
  in_loop_call k = {fn, arg, 0};
  ck_assert_int_eq(gev_loop_post(l, in_loop_trampoline, &k), 0);
  ck_assert_msg(th_wait_int(&k.done, 1, 10000), "posted task did not run");
}

static void *loop_main(void *arg)
{
  th_loop_thread *x = arg;
  x->rc = gev_loop_run(x->l);
  return NULL;
}

void th_lt_start(th_loop_thread *x)
{
  x->rc = 1;
  ck_assert_int_eq(gev_loop_new(&x->l), 0);
  ck_assert_int_eq(pthread_create(&x->t, NULL, loop_main, x), 0);
}

int th_lt_stop(th_loop_thread *x)
{
  gev_loop_stop(x->l);
  th_join(x->t, 20);
  return x->rc;
}

static int bind_loopback(int port)
{
  struct sockaddr_in sin = {.sin_family = AF_INET};
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)port);
  if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int local_port(int fd)
{
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);

  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}

int th_free_port(void)
{
  int fd = bind_loopback(0), port;

  ck_assert_int_ge(fd, 0);
  port = local_port(fd);
  close(fd);
  return port;
}

int th_listen_port(int port, int backlog)
{
  int fd = bind_loopback(port);

  if (fd >= 0 && listen(fd, backlog) < 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

int th_listen_plain(int backlog, int *port)
{
  int fd = th_listen_port(0, backlog);

  ck_assert_int_ge(fd, 0);
  *port = local_port(fd);
  return fd;
}

int th_accept(int lfd)
{
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  struct timeval tv = {10, 0};
  int fd;

  ck_assert_msg(poll(&p, 1, 10000) == 1, "nobody connected within 10 s");
  fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  ck_assert_int_ge(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}
