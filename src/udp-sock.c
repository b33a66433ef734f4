/* udp-sock.c - creating, binding and configuring datagram sockets, and the
 * option calls of udp.h that work on a socket's fd from any thread (under
 * the socket's mutex, so the loop cannot close the fd meanwhile). */
#include "udp-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int set_int(int fd, int level, int name, int v)
{
  return setsockopt(fd, level, name, &v, sizeof(v)) < 0 ? -errno : 0;
}

/* A unix datagram socket file whose owner died refuses a datagram
 * (ECONNREFUSED): it may be replaced. One that takes it is in use. */
static bool stale_path(const gev__addr *a)
{
  const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
  struct stat st;
  int fd, r;

  if (sun->sun_path[0] == '\0' || stat(sun->sun_path, &st) < 0 ||
      !S_ISSOCK(st.st_mode))
    return false;
  if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
    return false;
  r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
  r = r < 0 && errno == ECONNREFUSED;
  close(fd);
  return r;
}

static int addr_port(const gev__addr *a)
{
  if (a->ss.ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
  if (a->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
  return -1;
}

static int bind_to(int fd, const gev__addr *a, bool *own_path)
{
  const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
  bool path = sa->sa_family == AF_UNIX && a->len > sizeof(sa_family_t) &&
              ((const struct sockaddr_un *)sa)->sun_path[0];

  if (sa->sa_family == AF_UNIX && a->len <= sizeof(sa_family_t))
    return 0; /* unnamed: a client that expects no answer */
  if (bind(fd, sa, a->len) < 0) {
    int err = errno;
    if (err != EADDRINUSE || !path || !stale_path(a))
      return -err;
    unlink(((const struct sockaddr_un *)sa)->sun_path);
    if (bind(fd, sa, a->len) < 0)
      return -errno;
  }
  *own_path = path;
  return 0;
}

static int configure(int fd, const gev__addr *a, const gev_udp_options *o,
                     bool any_port)
{
  int family = a->ss.ss_family;
  int err = gev__addr_dual_stack(fd, a);

  if (!err && o->reuse_port && family != AF_UNIX && !any_port)
    err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
  if (!err && o->broadcast && family == AF_INET)
    err = set_int(fd, SOL_SOCKET, SO_BROADCAST, 1);
  if (!err && o->rcvbuf > 0)
    err = set_int(fd, SOL_SOCKET, SO_RCVBUF, o->rcvbuf);
  if (!err && o->sndbuf > 0)
    err = set_int(fd, SOL_SOCKET, SO_SNDBUF, o->sndbuf);
  if (!err && o->tos > 0 && family == AF_INET)
    err = set_int(fd, IPPROTO_IP, IP_TOS, o->tos);
  if (!err && o->tos > 0 && family == AF_INET6)
    err = set_int(fd, IPPROTO_IPV6, IPV6_TCLASS, o->tos);
  if (!err && o->pktinfo && family == AF_INET)
    err = set_int(fd, IPPROTO_IP, IP_PKTINFO, 1);
  if (!err && o->pktinfo && family == AF_INET6)
    err = set_int(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
  return err;
}

int gev__udp_socket(const gev__addr *a, const gev_udp_options *o, int *fd_out,
                    bool *own_path)
{
  int family = a->ss.ss_family;
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err;

  bool any_port = family != AF_UNIX && addr_port(a) == 0;

  *own_path = false;
  if (fd < 0)
    return -errno;
  /* Port 0 with SO_REUSEPORT: the kernel may pick a port that another
   * process's SO_REUSEPORT sockets (same user) hold, and the two would
   * split each other's datagrams. Bound without it, the port is one
   * nobody holds; the flag set after the bind still lets the server's
   * other sockets join this one's group. */
  if ((err = configure(fd, a, o, any_port)) < 0 ||
      (err = bind_to(fd, a, own_path)) < 0 ||
      (o->reuse_port && any_port &&
       (err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1)) < 0)) {
    close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

/* ---- option calls (any thread) ---------------------------------------- */

/* fn(u, arg) with the fd held open; -ENOTCONN once closed. */
static int with_fd(gev_udp *u, int (*fn)(gev_udp *u, const void *arg),
                   const void *arg)
{
  int err;

  if (!u)
    return -EINVAL;
  pthread_mutex_lock(&u->mu);
  err = atomic_load(&u->closed) || u->io.fd < 0 ? -ENOTCONN : fn(u, arg);
  pthread_mutex_unlock(&u->mu);
  return err;
}

static int do_connect(gev_udp *u, const void *arg)
{
  const gev__addr *a = arg;

  if (a->ss.ss_family != u->family)
    return -EINVAL;
  if (connect(u->io.fd, (const struct sockaddr *)&a->ss, a->len) < 0)
    return -errno;
  atomic_store(&u->connected, true);
  return 0;
}

int gev_udp_connect(gev_udp *u, const char *address)
{
  gev__addr a;
  int err;

  if (!u || !address)
    return -EINVAL;
  if ((err = gev__addr_parse(address, &a)) < 0)
    return err;
  return with_fd(u, do_connect, &a);
}

typedef struct mcast_req {
  const char *group, *iface;
  bool join;
  int ttl;
  bool loop;
} mcast_req;

static int ifindex(const char *iface, unsigned *out)
{
  *out = 0;
  if (iface && !(*out = if_nametoindex(iface)))
    return -ENODEV;
  return 0;
}

static int do_multicast(gev_udp *u, const void *arg)
{
  const mcast_req *r = arg;
  int err;

  if (u->family == AF_INET) {
    struct ip_mreq m = {.imr_interface.s_addr = htonl(INADDR_ANY)};
    if (inet_pton(AF_INET, r->group, &m.imr_multiaddr) != 1 ||
        (r->iface && inet_pton(AF_INET, r->iface, &m.imr_interface) != 1))
      return -EINVAL;
    return setsockopt(u->io.fd, IPPROTO_IP,
                      r->join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &m,
                      sizeof(m)) < 0
               ? -errno
               : 0;
  }
  if (u->family == AF_INET6) {
    struct ipv6_mreq m;
    unsigned idx;
    if (inet_pton(AF_INET6, r->group, &m.ipv6mr_multiaddr) != 1)
      return -EINVAL;
    if ((err = ifindex(r->iface, &idx)) < 0)
      return err;
    m.ipv6mr_interface = idx;
    return setsockopt(u->io.fd, IPPROTO_IPV6,
                      r->join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &m,
                      sizeof(m)) < 0
               ? -errno
               : 0;
  }
  return -EINVAL;
}

int gev_udp_multicast(gev_udp *u, const char *group, const char *iface,
                      bool join)
{
  mcast_req r = {.group = group, .iface = iface, .join = join};

  if (!group)
    return -EINVAL;
  return with_fd(u, do_multicast, &r);
}

static int mcast_out_v4(gev_udp *u, const mcast_req *r)
{
  int err = set_int(u->io.fd, IPPROTO_IP, IP_MULTICAST_TTL, r->ttl);
  struct in_addr a;

  if (!err)
    err = set_int(u->io.fd, IPPROTO_IP, IP_MULTICAST_LOOP, r->loop);
  if (!err && r->iface) {
    if (inet_pton(AF_INET, r->iface, &a) != 1)
      return -EINVAL;
    if (setsockopt(u->io.fd, IPPROTO_IP, IP_MULTICAST_IF, &a, sizeof(a)) < 0)
      err = -errno;
  }
  return err;
}

static int mcast_out_v6(gev_udp *u, const mcast_req *r)
{
  int err = set_int(u->io.fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, r->ttl);
  unsigned idx;

  if (!err)
    err = set_int(u->io.fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, r->loop);
  if (!err && r->iface) {
    if ((err = ifindex(r->iface, &idx)) < 0)
      return err;
    err = set_int(u->io.fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, (int)idx);
  }
  return err;
}

static int do_mcast_out(gev_udp *u, const void *arg)
{
  if (u->family == AF_INET)
    return mcast_out_v4(u, arg);
  if (u->family == AF_INET6)
    return mcast_out_v6(u, arg);
  return -EINVAL;
}

int gev_udp_multicast_options(gev_udp *u, int ttl, bool loop, const char *iface)
{
  mcast_req r = {.ttl = ttl, .loop = loop, .iface = iface};

  if (ttl < 0 || ttl > 255)
    return -EINVAL;
  return with_fd(u, do_mcast_out, &r);
}

static int do_broadcast(gev_udp *u, const void *arg)
{
  return set_int(u->io.fd, SOL_SOCKET, SO_BROADCAST, *(const bool *)arg);
}

int gev_udp_set_broadcast(gev_udp *u, bool on)
{
  return with_fd(u, do_broadcast, &on);
}
