/* log.c - the process-wide logging hook (gev_set_logger) and the
 * library's one way to use it.
 *
 * Silent by default. A level below which nothing is formatted is kept in
 * an atomic, so a disabled message costs one load; the logger itself is
 * read under a mutex (never held while it runs) so that its function and
 * argument always go together. */
#include "log-internal.h"

#include "conn-internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gev_log_fn log_fn;
static void *log_arg;
static atomic_int log_max = -1; /* -1: no logger */

void gev_set_logger(gev_log_fn fn, gev_log_level max_level, void *arg)
{
  pthread_mutex_lock(&mu);
  log_fn = fn;
  log_arg = arg;
  atomic_store(&log_max, fn ? (int)max_level : -1);
  pthread_mutex_unlock(&mu);
}

bool gev__log_on(gev_log_level level)
{
  return (int)level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

/* "loop 2 conn 127.0.0.1:5555: " (or "acceptor", "loop -", no conn). */
static int prefix(char *buf, size_t n, const gev_loop *l, const gev_conn *c)
{
  int k;

  if (!l)
    k = snprintf(buf, n, "gev: ");
  else if (l->index < 0)
    k = snprintf(buf, n, "%s: ", l->server ? "acceptor" : "loop");
  else
    k = snprintf(buf, n, "loop %d: ", l->index);
  if (c && k >= 0 && (size_t)k < n)
    k += snprintf(buf + k, n - (size_t)k,
                  "conn %s: ", c->peer[0] ? c->peer : "(unnamed)");
  return k;
}

void gev__log(gev_log_level level, const gev_loop *l, const gev_conn *c,
              const char *fmt, ...)
{
  char line[512];
  gev_log_fn fn;
  void *arg;
  va_list ap;
  int k;

  if (!gev__log_on(level))
    return;
  k = prefix(line, sizeof(line), l, c);
  if (k < 0 || (size_t)k >= sizeof(line))
    k = 0;
  va_start(ap, fmt);
  vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&mu);
  fn = (int)level <= atomic_load(&log_max) ? log_fn : NULL;
  arg = log_arg;
  pthread_mutex_unlock(&mu);
  if (fn)
    fn(level, line, arg); /* no lock held */
}
