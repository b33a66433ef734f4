/* resolve.h - internal: not installed. Name resolution off the loop
 * thread, for outgoing connections (resolve.c says how). */
#ifndef GEV_SRC_RESOLVE_H
#define GEV_SRC_RESOLVE_H

#include <stdint.h>

#include "addr.h"
#include "loop-internal.h"

/* Most addresses one resolution keeps (getaddrinfo's order). */
#define GEV__RESOLVE_MAX 16

/* Where an outgoing connection goes: addresses ready to try, or a name
 * for the resolver (host non-empty) with the port to give its answers. */
typedef struct gev__target {
  gev__addr addrs[GEV__RESOLVE_MAX];
  int n;
  char host[256];
  uint16_t port;
} gev__target;

/* Parses s without any lookup: numeric addresses and unix paths fill
 * addrs[0] (n = 1); a host name is kept in host for gev__resolve_start.
 * 0, -EINVAL (malformed) or -ENAMETOOLONG. Any thread. */
int gev__target_parse(const char *s, gev__target *t);

typedef struct gev__resolve gev__resolve;
/* The answer, in the loop's thread: 0 with t->addrs and t->n filled, or a
 * negative errno (gev__resolve_error) with t->n 0. */
typedef void (*gev__resolved_fn)(void *arg, int err);

/* Loop thread: resolves t->host into t (which must stay valid until fn
 * runs or the request is cancelled) on a thread of its own, then fn(arg,
 * err) runs in l's thread, never inside this call. 0 and *out, or -errno
 * (fn never runs): -EAGAIN when too many lookups run already (64, process
 * wide) or no thread could be made, -ENOMEM. */
int gev__resolve_start(gev_loop *l, gev__target *t, gev__resolved_fn fn,
                       void *arg, gev__resolve **out);
/* Loop thread, before fn ran (after it, r is gone): fn will not run, t is
 * no longer written; the lookup itself
 * may go on (getaddrinfo cannot be interrupted) and is discarded. */
void gev__resolve_cancel(gev__resolve *r);

/* getaddrinfo's EAI_* as a negative errno: -ENXIO for a name that does
 * not exist (or has no address), -EAGAIN for a temporary failure, -ENOMEM,
 * -EIO for any other failure; EAI_SYSTEM gives the errno. */
int gev__resolve_error(int eai, int saved_errno);

#endif
