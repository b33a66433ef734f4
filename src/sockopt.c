/* sockopt.c - TCP_NODELAY, keepalive and buffer sizes on gev's sockets. */
#include "sockopt.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int set_int(int fd, int level, int name, int v)
{
  return setsockopt(fd, level, name, &v, sizeof(v)) < 0 ? -errno : 0;
}

int gev__sockopts_check(const gev__sockopts *o)
{
  return o->keepalive_s < 0 || o->rcvbuf < 0 || o->sndbuf < 0 ? -EINVAL : 0;
}

int gev__sockopts_buffers(int fd, const gev__sockopts *o)
{
  int err = 0;

  if (o->rcvbuf > 0)
    err = set_int(fd, SOL_SOCKET, SO_RCVBUF, o->rcvbuf);
  if (!err && o->sndbuf > 0)
    err = set_int(fd, SOL_SOCKET, SO_SNDBUF, o->sndbuf);
  return err;
}

int gev__sockopt_nodelay(int fd, bool on)
{
  return set_int(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

int gev__sockopt_keepalive(int fd, int idle_s, int interval_s, int count)
{
  int err;

  if (idle_s < 0 || interval_s < 0 || count < 0)
    return -EINVAL;
  if (idle_s == 0)
    return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 0);
  /* The timings first: once SO_KEEPALIVE is on, the kernel's defaults (two
   * hours) would apply until they are set. */
  if ((err = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s)) < 0)
    return err;
  if (interval_s > 0 &&
      (err = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval_s)) < 0)
    return err;
  if (count > 0 && (err = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, count)) < 0)
    return err;
  return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
}

int gev__sockopts_conn(int fd, int family, const gev__sockopts *o)
{
  bool tcp = family == AF_INET || family == AF_INET6;
  int err = tcp ? gev__sockopt_nodelay(fd, true) : 0, e2;

  if (tcp && o->keepalive_s > 0 &&
      (e2 = gev__sockopt_keepalive(fd, o->keepalive_s, 0, 0)) < 0 && !err)
    err = e2;
  if ((e2 = gev__sockopts_buffers(fd, o)) < 0 && !err)
    err = e2;
  return err;
}
