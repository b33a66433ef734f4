/* conn-sockopt.c - a connection's TCP options, changed by its handler. */
#include "conn-internal.h"

#include <errno.h>

/* The socket of c when the owning thread may change its options. */
static int owned_fd(gev_conn *c, int *fd)
{
  if (!c || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED || c->io.fd < 0)
    return -ENOTCONN;
  *fd = c->io.fd;
  return 0;
}

int gev_conn_set_nodelay(gev_conn *c, bool on)
{
  int fd, err = owned_fd(c, &fd);

  return err ? err : gev__sockopt_nodelay(fd, on);
}

int gev_conn_set_keepalive(gev_conn *c, int idle_s, int interval_s, int count)
{
  int fd, err = owned_fd(c, &fd);

  if (err)
    return err;
  return gev__sockopt_keepalive(fd, idle_s, interval_s, count);
}
