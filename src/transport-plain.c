/* transport-plain.c - the default transport: bytes go straight to and from
 * the socket, in the calls the hot path has always made (one readv, one
 * sendmsg or sendto per message). */
#include <gev/transport.h>

#include "sys.h"

#include <errno.h>
#include <sys/socket.h>

static ssize_t plain_read(void *state, int fd, ringbuffer *in)
{
  int err = 0;
  ssize_t n = ringbuffer_read_fd(in, fd, &err);

  (void)state;
  if (n >= 0)
    return n;
  return err == EINTR ? -EAGAIN : -err;
}

static ssize_t plain_write(void *state, int fd, ringbuffer *out)
{
  int err = 0;
  ssize_t n = ringbuffer_write_fd(out, fd, &err);

  (void)state;
  if (n >= 0)
    return n;
  return err == EINTR || err == EAGAIN ? 0 : -err;
}

static ssize_t plain_send(void *state, int fd, const void *p, size_t n)
{
  ssize_t w = gev__sys_send(fd, p, n, MSG_NOSIGNAL);

  (void)state;
  if (w >= 0)
    return w;
  return errno == EINTR || errno == EAGAIN ? 0 : -errno;
}

static int plain_shutdown(void *state, int fd)
{
  (void)state;
  /* ENOTCONN: the peer reset meanwhile; the read side reports that. */
  return shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

static const gev_transport plain = {
    .read = plain_read,
    .write = plain_write,
    .send = plain_send,
    .shutdown = plain_shutdown,
};

const gev_transport *gev_transport_plain(void)
{
  return &plain;
}
