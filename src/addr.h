/* addr.h - internal: not installed. Address parsing and socket setup. */
#ifndef GEV_SRC_ADDR_H
#define GEV_SRC_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "sockopt.h"

typedef struct gev__addr {
  struct sockaddr_storage ss;
  socklen_t len;
} gev__addr;

/* "host:port", ":port", "[v6]:port", "unix:/path" or "unix:@abstract".
 * 0, -EINVAL (malformed, unknown host, port out of range) or
 * -ENAMETOOLONG (unix path). */
int gev__addr_parse(const char *s, gev__addr *out);

/* A non-blocking, close-on-exec listening socket bound to a, with so's
 * buffer sizes (so may be NULL); "[::]" is dual stack. 0 or -errno. A
 * stale unix socket file (nobody accepting) is replaced. */
int gev__addr_listen(const gev__addr *a, int backlog, bool reuse_port,
                     const gev__sockopts *so, int *fd_out);

/* Before the bind: "[::]" serves IPv4 too (as ::ffff:a.b.c.d), whatever
 * net.ipv6.bindv6only says, so a wildcard means the same on every host.
 * Other addresses are left alone. 0 or -errno. */
int gev__addr_dual_stack(int fd, const gev__addr *a);

/* "ip:port", "[v6]:port", the unix path, or "" when unnamed. */
void gev__addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                      size_t n);

/* Port the socket is bound to; 0 for unix sockets or on error. */
int gev__addr_local_port(int fd);

/* Longest string gev__addr_format writes, with the terminating NUL. */
#define GEV__ADDR_STRLEN 110

#endif
