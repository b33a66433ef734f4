/* sockopt.h - internal: not installed. The socket options a server or an
 * outgoing connection asks for, set on each of its sockets. */
#ifndef GEV_SRC_SOCKOPT_H
#define GEV_SRC_SOCKOPT_H

#include <stdbool.h>

/* The options' values; 0 leaves the kernel's default. */
typedef struct gev__sockopts {
  int keepalive_s; /* SO_KEEPALIVE with TCP_KEEPIDLE of this many seconds */
  int rcvbuf;      /* SO_RCVBUF */
  int sndbuf;      /* SO_SNDBUF */
} gev__sockopts;

/* -EINVAL when a value is negative, else 0. */
int gev__sockopts_check(const gev__sockopts *o);

/* The buffer sizes, on a socket before listen or connect: TCP fixes its
 * window scale in the handshake, from the receive buffer it has then.
 * 0 or -errno. */
int gev__sockopts_buffers(int fd, const gev__sockopts *o);

/* Everything on a connected socket: TCP_NODELAY on (TCP only), keepalive
 * (TCP only) and the buffers (a TCP socket accepted from a listener gev
 * bound has them already; a unix one, or one from an adopted listener,
 * does not). 0 or the first -errno (the others are still tried). */
int gev__sockopts_conn(int fd, int family, const gev__sockopts *o);

/* SO_KEEPALIVE on (idle_s > 0, with TCP_KEEPIDLE idle_s and, when > 0,
 * TCP_KEEPINTVL and TCP_KEEPCNT) or off (idle_s 0). 0 or -errno. */
int gev__sockopt_keepalive(int fd, int idle_s, int interval_s, int count);

/* TCP_NODELAY. 0 or -errno. */
int gev__sockopt_nodelay(int fd, bool on);

#endif
