/* udp-server.c - one datagram socket per worker loop of a server, all
 * bound with SO_REUSEPORT to one address, so the kernel spreads senders
 * over the loops. It needs nothing of the server but its worker loops
 * (gev_server_worker_loop): the sockets are handles of those loops, which
 * close them when they stop and drain them in a graceful shutdown. */
#include "udp-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>

struct gev_udp_server {
  int n;
  int port;
  gev_udp **socks;
};

static void set_port(gev__addr *a, int port)
{
  if (a->ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
  else if (a->ss.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

int gev_udp_server_new(gev_udp_server **out, gev_server *s,
                       const gev_udp_handler *h, const gev_udp_options *opt)
{
  gev_udp_options o;
  gev_udp_server *us;
  gev__addr a;
  int err = 0;

  if (out)
    *out = NULL;
  if (!out || !s || !h || !opt || !opt->address)
    return -EINVAL;
  if ((err = gev__addr_parse(opt->address, &a)) < 0)
    return err;
  if (!(us = calloc(1, sizeof(*us))))
    return -ENOMEM;
  us->n = a.ss.ss_family == AF_UNIX ? 1 : gev_server_num_loops(s);
  if (!(us->socks = calloc((size_t)us->n, sizeof(*us->socks)))) {
    free(us);
    return -ENOMEM;
  }
  o = *opt;
  o.reuse_port = a.ss.ss_family != AF_UNIX;
  for (int i = 0; i < us->n && !err; i++) {
    err =
        gev__udp_new_at(&us->socks[i], gev_server_worker_loop(s, i), h, &o, &a);
    if (!err && i == 0) { /* port 0: the others take the one it got */
      us->port = gev_udp_port(us->socks[0]);
      set_port(&a, us->port);
    }
  }
  if (err) {
    gev_udp_server_free(us);
    return err;
  }
  *out = us;
  return 0;
}

int gev_udp_server_port(const gev_udp_server *us)
{
  return us ? us->port : 0;
}

int gev_udp_server_num_sockets(const gev_udp_server *us)
{
  return us ? us->n : 0;
}

gev_udp *gev_udp_server_socket(gev_udp_server *us, int i)
{
  return us && i >= 0 && i < us->n ? us->socks[i] : NULL;
}

void gev_udp_server_free(gev_udp_server *us)
{
  if (!us)
    return;
  for (int i = 0; i < us->n; i++)
    gev_udp_free(us->socks[i]);
  free(us->socks);
  free(us);
}
