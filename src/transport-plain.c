/* transport-plain.c - the default transport: bytes go straight to and from
 * the socket, in the calls the hot path has always made (one read or readv,
 * one send or sendmsg per message). The operations themselves are inline
 * in transport-plain.h; this is the table that names them. */
#include "transport-plain.h"

#include <sys/socket.h>

static ssize_t plain_read(void *state, int fd, ringbuffer *in)
{
  (void)state;
  return gev__plain_read(fd, in);
}

static ssize_t plain_write(void *state, int fd, ringbuffer *out)
{
  (void)state;
  return gev__plain_write(fd, out);
}

static ssize_t plain_send(void *state, int fd, const void *p, size_t n)
{
  (void)state;
  return gev__plain_send(fd, p, n);
}

static int plain_shutdown(void *state, int fd)
{
  (void)state;
  /* ENOTCONN: the peer reset meanwhile; the read side reports that. */
  return shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

const gev_transport gev__plain = {
    .read = plain_read,
    .write = plain_write,
    .send = plain_send,
    .shutdown = plain_shutdown,
};

const gev_transport *gev_transport_plain(void)
{
  return &gev__plain;
}
