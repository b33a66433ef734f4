/* resolve.c - name resolution off the loop thread.
 *
 * getaddrinfo blocks, so every lookup runs on a short-lived thread of its
 * own (detached, small stack, every signal blocked), which hands the
 * answer to the loop as a task. The choice over getaddrinfo_a: that one
 * also runs threads behind the caller's back (glibc's helper threads, and
 * SIGEV_THREAD notification spawns one more), cannot really cancel a
 * lookup under way either, and is glibc-only; our own thread keeps
 * ownership plain and needs nothing beyond pthreads. A lookup cannot be
 * interrupted: a cancelled one runs to its end and its answer is dropped.
 *
 * Ownership: a request has two references, the thread's and the loop
 * side's (the connect that waits for it). The thread posts its answer
 * under the request's mutex unless the loop side cancelled first, so a
 * cancelled request never touches its loop again (the loop may be gone). */
#include "resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Enough for getaddrinfo and the NSS modules it loads. */
#define RESOLVER_STACK (256 * 1024)
/* Lookups running at once, process-wide: past this a connect fails with
 * -EAGAIN (a gev_client retries it after its backoff) rather than the
 * process running out of threads when thousands redial a name together. */
#define MAX_LOOKUPS 64

static atomic_int lookups; /* resolver threads running */

struct gev__resolve {
  pthread_mutex_t mu;
  atomic_int refs;
  bool cancelled; /* under mu; set in the loop's thread */
  gev_loop *l;
  gev__target *t; /* the loop side's, written in the loop's thread */
  gev__resolved_fn fn;
  void *arg;
  int err;
  gev__target res; /* the thread's answer */
};

static void unref(gev__resolve *r)
{
  if (atomic_fetch_sub(&r->refs, 1) == 1) {
    pthread_mutex_destroy(&r->mu);
    free(r);
  }
}

static void drop_task(void *arg)
{
  unref(arg);
}

int gev__resolve_error(int eai, int saved_errno)
{
  switch (eai) {
  case 0: return 0;
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
  case EAI_ADDRFAMILY:
#endif
    return -ENXIO;
  case EAI_AGAIN: return -EAGAIN;
  case EAI_MEMORY: return -ENOMEM;
  case EAI_SYSTEM: return saved_errno > 0 ? -saved_errno : -EIO;
  default: return -EIO;
  }
}

static void set_port(gev__addr *a, uint16_t port)
{
  if (a->ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
}

/* In the resolver thread: getaddrinfo's order (RFC 6724: IPv6 first where
 * it is usable), TCP and IP only, at most GEV__RESOLVE_MAX. */
static int lookup(gev__target *t)
{
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC},
                  *res, *ai;
  int eai = getaddrinfo(t->host, NULL, &hints, &res), saved = errno;

  t->n = 0;
  if (eai != 0)
    return gev__resolve_error(eai, saved);
  for (ai = res; ai && t->n < GEV__RESOLVE_MAX; ai = ai->ai_next) {
    gev__addr *a = &t->addrs[t->n];
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        ai->ai_addrlen > sizeof(a->ss))
      continue;
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
    a->len = ai->ai_addrlen;
    set_port(a, t->port);
    t->n++;
  }
  freeaddrinfo(res);
  return t->n ? 0 : -ENXIO;
}

/* In the loop: the answer, unless the connect gave up meanwhile. */
static void answer_task(void *arg)
{
  gev__resolve *r = arg;
  bool cancelled;

  pthread_mutex_lock(&r->mu);
  cancelled = r->cancelled;
  pthread_mutex_unlock(&r->mu);
  if (!cancelled) {
    r->t->n = r->err ? 0 : r->res.n;
    memcpy(r->t->addrs, r->res.addrs, sizeof(r->res.addrs[0]) * r->t->n);
    r->fn(r->arg, r->err);
    unref(r); /* the caller's: it forgets r once fn ran */
  }
  unref(r);
}

static void *resolver_main(void *arg)
{
  gev__resolve *r = arg;

  /* Named so that ps, top and gdb show whose thread it is. */
  pthread_setname_np(pthread_self(), "gev-resolve");
  r->err = lookup(&r->res);
  atomic_fetch_sub(&lookups, 1);
  /* The post's reference is the thread's. A post refused because the loop
   * is finishing cancels the request (its connect is stopped); one refused
   * for want of memory is tried again, for the connect waits for this
   * answer (with no timeout, for ever), until it succeeds or the connect
   * gives up. */
  for (int tries = 0;; tries++) {
    int err = -ECANCELED; /* r is not touched after a post: it may be gone */

    pthread_mutex_lock(&r->mu);
    if (!r->cancelled)
      err = gev__loop_post_owned(r->l, answer_task, r, drop_task);
    pthread_mutex_unlock(&r->mu);
    if (err == 0)
      return NULL;
    if (err != -ENOMEM)
      break;
    usleep(tries < 10 ? 1000 : 20 * 1000);
  }
  unref(r);
  return NULL;
}

static int spawn(gev__resolve *r)
{
  pthread_attr_t attr;
  pthread_t th;
  sigset_t all, old;
  int err;

  if ((err = pthread_attr_init(&attr)) != 0)
    return -err;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, RESOLVER_STACK);
  /* Signals stay with the application's threads (as the workers do). */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = pthread_create(&th, &attr, resolver_main, r);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return -err;
}

int gev__resolve_start(gev_loop *l, gev__target *t, gev__resolved_fn fn,
                       void *arg, gev__resolve **out)
{
  gev__resolve *r = calloc(1, sizeof(*r));
  int err;

  gev__assert_in_loop(l);
  if (!r)
    return -ENOMEM;
  if ((err = pthread_mutex_init(&r->mu, NULL)) != 0) {
    free(r);
    return -err;
  }
  atomic_init(&r->refs, 2); /* the thread's and the caller's */
  r->l = l;
  r->t = t;
  r->fn = fn;
  r->arg = arg;
  memcpy(r->res.host, t->host, sizeof(t->host));
  r->res.port = t->port;
  if (atomic_fetch_add(&lookups, 1) >= MAX_LOOKUPS)
    err = -EAGAIN;
  else
    err = spawn(r);
  if (err < 0) {
    atomic_fetch_sub(&lookups, 1);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return err;
  }
  *out = r;
  return 0;
}

void gev__resolve_cancel(gev__resolve *r)
{
  pthread_mutex_lock(&r->mu);
  r->cancelled = true;
  pthread_mutex_unlock(&r->mu);
  unref(r);
}

/* ---- parsing without lookups ------------------------------------------ */

/* Digits and dots, brackets, or a colon: addr.c's parser takes these
 * without a lookup (or refuses them); anything else is a name. */
static bool numeric(const char *host, size_t n)
{
  char buf[64];
  struct in6_addr a6;

  if (n == 0 || memchr(host, ':', n))
    return true;
  if (strspn(host, "0123456789.") >= n)
    return true;
  if (n >= sizeof(buf))
    return false;
  memcpy(buf, host, n);
  buf[n] = '\0';
  return inet_pton(AF_INET6, buf, &a6) == 1;
}

int gev__target_parse(const char *s, gev__target *t)
{
  const char *colon;
  size_t hlen;
  unsigned long port = 0;
  int err;

  if (!s)
    return -EINVAL;
  t->n = 0;
  t->host[0] = '\0';
  colon = strrchr(s, ':');
  hlen = colon ? (size_t)(colon - s) : 0;
  if (strncmp(s, "unix:", 5) == 0 || s[0] == '[' || !colon ||
      numeric(s, hlen)) {
    if ((err = gev__addr_parse(s, &t->addrs[0])) < 0)
      return err;
    t->n = 1;
    return 0;
  }
  if (hlen >= sizeof(t->host) || !colon[1])
    return -EINVAL;
  for (const char *p = colon + 1; *p; p++) {
    if (*p < '0' || *p > '9' ||
        (port = port * 10 + (unsigned)(*p - '0')) > 65535)
      return -EINVAL;
  }
  memcpy(t->host, s, hlen);
  t->host[hlen] = '\0';
  t->port = (uint16_t)port;
  return 0;
}
