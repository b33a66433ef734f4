/* fault.c - the renamed calls of the library (fault.h says how and why).
 * This file itself is not renamed: the calls it makes are the real ones. */
#include "fault.h"

#include <errno.h>
#include <execinfo.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef FAULT_SSL
#include <openssl/crypto.h>
#endif

enum { MODE_COUNT, MODE_NTH, MODE_RANDOM };

static _Atomic uint64_t hits[FK_COUNT];
static _Atomic uint64_t injected;
static _Atomic uint64_t draws;
static _Atomic int mode;
static _Atomic int nth_kind = -1;
static _Atomic uint64_t nth_at;
static void (*_Atomic inject_hook)(fault_kind k);
static void (*_Atomic hit_hook)(fault_kind k);
static uint64_t rnd_seed;
static unsigned rnd_permille;

static const char *const names[FK_COUNT] = {
    "malloc",    "calloc",     "realloc", "accept4",        "read",
    "readv",     "send",       "sendmsg", "wake-write",     "epoll_create",
    "epoll_ctl", "epoll_wait", "eventfd", "pthread_create", "socket",
    "bind",      "listen",     "connect", "getaddrinfo",    "ssl-alloc",
    "recvmmsg",  "sendmmsg",
};

const char *fault_kind_name(fault_kind k)
{
  return names[k];
}
uint64_t fault_hits(fault_kind k)
{
  return atomic_load(&hits[k]);
}
uint64_t fault_injected(void)
{
  return atomic_load(&injected);
}

static void reset(void)
{
  for (int k = 0; k < FK_COUNT; k++)
    atomic_store(&hits[k], 0);
  atomic_store(&injected, 0);
  atomic_store(&draws, 0);
}

void fault_arm_count(void)
{
  reset();
  atomic_store(&mode, MODE_COUNT);
}

void fault_arm_nth(fault_kind k, uint64_t nth)
{
  reset();
  atomic_store(&nth_kind, (int)k);
  atomic_store(&nth_at, nth);
  atomic_store(&mode, MODE_NTH);
}

void fault_arm_random(uint64_t seed, unsigned permille)
{
  reset();
  rnd_seed = seed;
  rnd_permille = permille;
  atomic_store(&mode, MODE_RANDOM);
}

void fault_set_hook(void (*fn)(fault_kind k))
{
  atomic_store(&inject_hook, fn);
}

void fault_set_hit_hook(void (*fn)(fault_kind k))
{
  atomic_store(&hit_hook, fn);
}

void fault_disarm(void)
{
  atomic_store(&mode, MODE_COUNT);
}

static uint64_t mix(uint64_t x)
{
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

/* One hit of kind k. Returns 0 to pass the call through, 1 to fail it
 * hard (the kind's errno), or 2 + r for a transient result (random mode,
 * r a random number for the caller to pick EINTR / EAGAIN / short). */
static uint64_t hit(fault_kind k, bool transient_ok)
{
  void (*on_hit)(fault_kind) = atomic_load(&hit_hook);
  uint64_t n;

  if (on_hit) /* before the count: it may arm a fault for this very hit */
    on_hit(k);
  n = atomic_fetch_add(&hits[k], 1) + 1;

  switch (atomic_load(&mode)) {
  case MODE_NTH:
    if (atomic_load(&nth_kind) == (int)k && n == atomic_load(&nth_at)) {
      atomic_fetch_add(&injected, 1);
      if (getenv("FAULT_BACKTRACE")) { /* where the failed call was made */
        void *frames[24];
        backtrace_symbols_fd(frames, backtrace(frames, 24), 2);
      }
      void (*fn)(fault_kind) = atomic_load(&inject_hook);
      if (fn)
        fn(k);
      return 1;
    }
    return 0;
  case MODE_RANDOM: {
    uint64_t r;
    if (!transient_ok)
      return 0;
    r = mix(rnd_seed ^ (atomic_fetch_add(&draws, 1) * 0x100000001b3u));
    if (r % 1000 >= rnd_permille)
      return 0;
    atomic_fetch_add(&injected, 1);
    return 2 + (r >> 20);
  }
  default: return 0;
  }
}

static void *fail_null(void)
{
  errno = ENOMEM;
  return NULL;
}

void *fault_malloc(size_t n);
void *fault_calloc(size_t m, size_t n);
void *fault_realloc(void *p, size_t n);
char *fault_strdup(const char *s);

void *fault_malloc(size_t n)
{
  return hit(FK_MALLOC, false) ? fail_null() : malloc(n);
}
void *fault_calloc(size_t m, size_t n)
{
  return hit(FK_CALLOC, false) ? fail_null() : calloc(m, n);
}
void *fault_realloc(void *p, size_t n)
{
  return hit(FK_REALLOC, false) ? fail_null() : realloc(p, n);
}
char *fault_strdup(const char *s)
{
  return hit(FK_MALLOC, false) ? fail_null() : strdup(s);
}

static long fail(int err)
{
  errno = err;
  return -1;
}

/* A transient result for an I/O call: EINTR, EAGAIN, or (returns a
 * shorter length to use instead of n) a short transfer. */
static long transient(uint64_t h, size_t *n)
{
  unsigned pick = (unsigned)(h % 3);

  if (pick == 0 || *n < 2)
    return fail(pick == 1 ? EAGAIN : EINTR);
  if (pick == 1)
    return fail(EAGAIN);
  *n = 1 + (size_t)((h >> 8) % (*n - 1));
  return 0;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
  size_t t = 0;
  for (int i = 0; i < cnt; i++)
    t += iov[i].iov_len;
  return t;
}

/* Copies iov into cut, keeping only the first `keep` bytes. */
static int iov_cut(const struct iovec *iov, int cnt, size_t keep,
                   struct iovec *cut, int max)
{
  int i = 0;
  for (; i < cnt && i < max && keep > 0; i++) {
    cut[i] = iov[i];
    if (cut[i].iov_len > keep)
      cut[i].iov_len = keep;
    keep -= cut[i].iov_len;
  }
  return i;
}

enum { IOV_MAX_CUT = 64 };

static ssize_t do_readv(int fd, const struct iovec *iov, int cnt, bool raw)
{
  uint64_t h = hit(FK_READV, true);
  size_t n = iov_total(iov, cnt);
  struct iovec cut[IOV_MAX_CUT];

  if (h == 1)
    return fail(ECONNRESET);
  if (h > 1) {
    if (transient(h, &n) < 0)
      return -1;
    cnt = iov_cut(iov, cnt, n, cut, IOV_MAX_CUT);
    iov = cut;
  }
  return raw ? syscall(SYS_readv, fd, iov, cnt) : readv(fd, iov, cnt);
}

static ssize_t do_read(fault_kind k, int fd, void *p, size_t n, int how)
{
  uint64_t h = hit(k, k == FK_READ);

  if (h == 1)
    return fail(k == FK_READ ? ECONNRESET : EINTR);
  if (h > 1 && transient(h, &n) < 0)
    return -1;
  if (how == 1)
    return syscall(SYS_read, fd, p, n);
  if (how == 2)
    return recv(fd, p, n, 0);
  return read(fd, p, n);
}

static ssize_t do_send(int fd, const void *p, size_t n, int flags, bool raw)
{
  uint64_t h = hit(FK_SEND, true);

  if (h == 1)
    return fail(ECONNRESET);
  if (h > 1 && transient(h, &n) < 0)
    return -1;
  return raw ? syscall(SYS_sendto, fd, p, n, flags, NULL, 0)
             : send(fd, p, n, flags);
}

static ssize_t do_sendmsg(int fd, const struct msghdr *m, int flags, bool raw)
{
  uint64_t h = hit(FK_SENDMSG, true);
  struct msghdr cm;
  struct iovec cut[IOV_MAX_CUT];
  size_t n = iov_total(m->msg_iov, (int)m->msg_iovlen);

  if (h == 1)
    return fail(ECONNRESET);
  if (h > 1) {
    if (transient(h, &n) < 0)
      return -1;
    cm = *m;
    cm.msg_iov = cut;
    cm.msg_iovlen =
        (size_t)iov_cut(m->msg_iov, (int)m->msg_iovlen, n, cut, IOV_MAX_CUT);
    m = &cm;
  }
  return raw ? syscall(SYS_sendmsg, fd, m, flags) : sendmsg(fd, m, flags);
}

static int do_epoll_wait(int ep, struct epoll_event *ev, int max, int ms,
                         bool raw)
{
  if (hit(FK_EPOLL_WAIT, true))
    return (int)fail(EINTR);
  return raw ? (int)syscall(SYS_epoll_pwait, ep, ev, max, ms, NULL, (size_t)0)
             : epoll_wait(ep, ev, max, ms);
}

/* recvmmsg and sendmmsg: a hard error, or EINTR, EAGAIN, or fewer
 * datagrams than asked (the rest stay in the kernel or in the caller's
 * hands, as a real short result leaves them). -1 (errno set) to fail the
 * call, else 0 with *vlen perhaps cut. */
static atomic_bool sendmmsg_eagain;

void fault_sendmmsg_eagain(bool on)
{
  atomic_store(&sendmmsg_eagain, on);
}

static int mmsg_fault(fault_kind k, long *vlen)
{
  uint64_t h = hit(k, true);

  if (k == FK_SENDMMSG && atomic_load(&sendmmsg_eagain))
    return (int)fail(EAGAIN);

  if (h == 1)
    return (int)fail(k == FK_RECVMMSG ? ECONNREFUSED : EPERM);
  if (h > 1) {
    unsigned pick = (unsigned)(h % 3);
    if (pick < 2 || *vlen < 2)
      return (int)fail(pick == 1 ? EAGAIN : EINTR);
    *vlen = 1 + (long)((h >> 8) % (uint64_t)(*vlen - 1));
  }
  return 0;
}

static long do_mmsg(fault_kind k, long nr, long *a)
{
  if (mmsg_fault(k, &a[2]) < 0)
    return -1;
  return syscall(nr, a[0], a[1], a[2], a[3], a[4]);
}

/* The libc functions (the library calls these under TSan, whose
 * interceptors must see them). */
int fault_sendmmsg(int fd, struct mmsghdr *m, unsigned n, int flags);
int fault_sendmmsg(int fd, struct mmsghdr *m, unsigned n, int flags)
{
  long vlen = n;

  if (mmsg_fault(FK_SENDMMSG, &vlen) < 0)
    return -1;
  return sendmmsg(fd, m, (unsigned)vlen, flags);
}

int fault_recvmmsg(int fd, struct mmsghdr *m, unsigned n, int flags,
                   struct timespec *t);
int fault_recvmmsg(int fd, struct mmsghdr *m, unsigned n, int flags,
                   struct timespec *t)
{
  long vlen = n;

  if (mmsg_fault(FK_RECVMMSG, &vlen) < 0)
    return -1;
  return recvmmsg(fd, m, (unsigned)vlen, flags, t);
}

long fault_syscall(long nr, ...);
long fault_syscall(long nr, ...)
{
  va_list ap;
  long a[6];

  va_start(ap, nr);
  for (int i = 0; i < 6; i++)
    a[i] = va_arg(ap, long);
  va_end(ap);
  switch (nr) {
  case SYS_read:
    return do_read(FK_READ, (int)a[0], (void *)a[1], (size_t)a[2], 1);
  case SYS_readv:
    return do_readv((int)a[0], (const struct iovec *)a[1], (int)a[2], true);
  case SYS_sendto:
    return do_send((int)a[0], (const void *)a[1], (size_t)a[2], (int)a[3],
                   true);
  case SYS_sendmsg:
    return do_sendmsg((int)a[0], (const struct msghdr *)a[1], (int)a[2], true);
  case SYS_epoll_pwait:
    return do_epoll_wait((int)a[0], (struct epoll_event *)a[1], (int)a[2],
                         (int)a[3], true);
  case SYS_recvmmsg: return do_mmsg(FK_RECVMMSG, nr, a);
  case SYS_sendmmsg: return do_mmsg(FK_SENDMMSG, nr, a);
  default: return syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  }
}

ssize_t fault_read(int fd, void *p, size_t n);
ssize_t fault_recv(int fd, void *p, size_t n, int flags);
ssize_t fault_readv(int fd, const struct iovec *iov, int cnt);
ssize_t fault_write(int fd, const void *p, size_t n);
ssize_t fault_send(int fd, const void *p, size_t n, int flags);
ssize_t fault_sendmsg(int fd, const struct msghdr *m, int flags);
int fault_epoll_wait(int ep, struct epoll_event *ev, int max, int ms);
int fault_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev);
int fault_epoll_create1(int flags);
int fault_eventfd(unsigned v, int flags);
int fault_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);
int fault_pthread_create(pthread_t *t, const pthread_attr_t *a,
                         void *(*fn)(void *), void *arg);
int fault_socket(int d, int t, int p);
int fault_bind(int fd, const struct sockaddr *sa, socklen_t len);
int fault_listen(int fd, int backlog);
int fault_connect(int fd, const struct sockaddr *sa, socklen_t len);
int fault_getaddrinfo(const char *h, const char *s, const struct addrinfo *hi,
                      struct addrinfo **res);

/* The library's plain read() is the eventfd drain. */
ssize_t fault_read(int fd, void *p, size_t n)
{
  return do_read(FK_READ, fd, p, n, 0);
}
ssize_t fault_recv(int fd, void *p, size_t n, int flags)
{
  (void)flags;
  return do_read(FK_READ, fd, p, n, 2);
}
ssize_t fault_readv(int fd, const struct iovec *iov, int cnt)
{
  return do_readv(fd, iov, cnt, false);
}
ssize_t fault_send(int fd, const void *p, size_t n, int flags)
{
  return do_send(fd, p, n, flags, false);
}
ssize_t fault_sendmsg(int fd, const struct msghdr *m, int flags)
{
  return do_sendmsg(fd, m, flags, false);
}
int fault_epoll_wait(int ep, struct epoll_event *ev, int max, int ms)
{
  return do_epoll_wait(ep, ev, max, ms, false);
}

/* The library writes with write() only to wake a loop's eventfd. */
ssize_t fault_write(int fd, const void *p, size_t n)
{
  if (hit(FK_WAKE_WRITE, true))
    return fail(EINTR);
  return write(fd, p, n);
}

int fault_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
  return hit(FK_EPOLL_CTL, false) ? (int)fail(ENOMEM)
                                  : epoll_ctl(ep, op, fd, ev);
}
int fault_epoll_create1(int flags)
{
  return hit(FK_EPOLL_CREATE, false) ? (int)fail(EMFILE) : epoll_create1(flags);
}
int fault_eventfd(unsigned v, int flags)
{
  return hit(FK_EVENTFD, false) ? (int)fail(EMFILE) : eventfd(v, flags);
}

/* A transient accept4 result: EAGAIN (nothing after all), ECONNABORTED
 * (the peer gave up in the queue) or EINTR. */
int fault_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
  static const int tr[] = {EAGAIN, ECONNABORTED, EINTR};
  uint64_t h = hit(FK_ACCEPT, true);

  if (h == 1)
    return (int)fail(EMFILE);
  if (h > 1)
    return (int)fail(tr[h % 3]);
  return accept4(fd, sa, len, flags);
}

int fault_pthread_create(pthread_t *t, const pthread_attr_t *a,
                         void *(*fn)(void *), void *arg)
{
  return hit(FK_THREAD, false) ? EAGAIN : pthread_create(t, a, fn, arg);
}
int fault_socket(int d, int t, int p)
{
  return hit(FK_SOCKET, false) ? (int)fail(EMFILE) : socket(d, t, p);
}
int fault_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
  return hit(FK_BIND, false) ? (int)fail(EADDRINUSE) : bind(fd, sa, len);
}
int fault_listen(int fd, int backlog)
{
  return hit(FK_LISTEN, false) ? (int)fail(EADDRINUSE) : listen(fd, backlog);
}
int fault_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
  return hit(FK_CONNECT, false) ? (int)fail(ENETUNREACH) : connect(fd, sa, len);
}
int fault_getaddrinfo(const char *h, const char *s, const struct addrinfo *hi,
                      struct addrinfo **res)
{
  return hit(FK_RESOLVE, false) ? EAI_MEMORY : getaddrinfo(h, s, hi, res);
}

static _Thread_local bool immune;

void fault_immune(bool on)
{
  immune = on;
}

#ifdef FAULT_SSL
static void *ssl_malloc(size_t n, const char *file, int line)
{
  (void)file, (void)line;
  return !immune && hit(FK_SSL_ALLOC, false) ? NULL : malloc(n);
}
static void *ssl_realloc(void *p, size_t n, const char *file, int line)
{
  (void)file, (void)line;
  return !immune && hit(FK_SSL_ALLOC, false) ? NULL : realloc(p, n);
}
static void ssl_free(void *p, const char *file, int line)
{
  (void)file, (void)line;
  free(p);
}
bool fault_ssl_hooks(void)
{
  return CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free) == 1;
}
#else
bool fault_ssl_hooks(void)
{
  return false;
}
#endif
