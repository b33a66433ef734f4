/* transport-plain.h - internal: not installed. The plaintext transport's
 * operations, inline, so that the connection layer can call them directly
 * when a connection uses the default transport: through the table, each
 * read and each write cost an indirect call and the shuffling around it
 * (18 user-space instructions per echoed message, measured with
 * callgrind), on the path every plaintext message takes. */
#ifndef GEV_SRC_TRANSPORT_PLAIN_H
#define GEV_SRC_TRANSPORT_PLAIN_H

#include <gev/transport.h>

#include "sys.h"

#include <errno.h>

/* The table gev_transport_plain() returns. Hidden: compared by address on
 * every read and write, which then needs no GOT load. */
extern const gev_transport gev__plain __attribute__((visibility("hidden")));

static inline ssize_t gev__plain_read(int fd, ringbuffer *in)
{
  int err = 0;
  ssize_t n = ringbuffer_read_fd(in, fd, &err);

  if (n >= 0)
    return n;
  return err == EINTR ? -EAGAIN : -err;
}

static inline ssize_t gev__plain_write(int fd, ringbuffer *out)
{
  int err = 0;
  ssize_t n = ringbuffer_write_fd(out, fd, &err);

  if (n >= 0)
    return n;
  return err == EINTR || err == EAGAIN ? 0 : -err;
}

static inline ssize_t gev__plain_send(int fd, const void *p, size_t n)
{
  ssize_t w = gev__sys_send(fd, p, n, MSG_NOSIGNAL);

  if (w >= 0)
    return w;
  return errno == EINTR || errno == EAGAIN ? 0 : -errno;
}

#endif
