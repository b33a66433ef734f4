/* activation.c - "fd:" addresses: sockets a server adopts instead of
 * binding.
 *
 * systemd's protocol (sd_listen_fds(3)): the service finds its sockets at
 * fd 3 onwards, LISTEN_FDS of them, with LISTEN_PID set to its own pid (so
 * that a child that inherited the environment does not take them too) and,
 * optionally, LISTEN_FDNAMES naming each one, colon-separated. "fd:NAME"
 * looks the name up there; "fd:N" (digits only) takes fd N as it is,
 * whoever passed it.
 * The environment is only read: it belongs to the application, and
 * changing it is not safe while other threads may read it. */
#include "activation.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* systemd's first passed fd (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3

bool gev__activation_is(const char *address)
{
  return strncmp(address, "fd:", 3) == 0;
}

/* A decimal number up to max, nothing else; -1 otherwise. */
static long parse_decimal(const char *s, long max)
{
  long v = 0;

  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    v = v * 10 + (*s - '0');
    if (v > max)
      return -1;
  }
  return v;
}

/* The position of name in the colon-separated list, or -1. */
static long name_index(const char *list, const char *name)
{
  size_t n = strlen(name);
  long i = 0;

  for (const char *p = list;; i++) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && memcmp(p, name, n) == 0)
      return i;
    if (!end)
      return -1;
    p = end + 1;
  }
}

/* fd:NAME through LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. */
static int lookup_name(const char *name, int *fd)
{
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  const char *names = getenv("LISTEN_FDNAMES");
  long n, i;

  if (!pid || parse_decimal(pid, 1L << 30) != (long)getpid())
    return -ENOENT; /* not for this process */
  if (!fds || (n = parse_decimal(fds, 1 << 20)) < 0 || !names ||
      (i = name_index(names, name)) < 0 || i >= n)
    return -ENOENT;
  *fd = LISTEN_FDS_START + (int)i;
  return 0;
}

static int get_int(int fd, int name, int *v)
{
  socklen_t len = sizeof(*v);

  return getsockopt(fd, SOL_SOCKET, name, v, &len) < 0 ? -errno : 0;
}

/* A listening stream socket of a family the server knows, or why not. */
static int check_socket(int fd, int *family)
{
  int v, err;

  if (fcntl(fd, F_GETFD) < 0)
    return -EBADF;
  if ((err = get_int(fd, SO_TYPE, &v)) < 0)
    return err; /* -ENOTSOCK for a file or a pipe */
  if (v != SOCK_STREAM)
    return -ESOCKTNOSUPPORT;
  if ((err = get_int(fd, SO_DOMAIN, family)) < 0)
    return err;
  if (*family != AF_INET && *family != AF_INET6 && *family != AF_UNIX)
    return -EAFNOSUPPORT;
  if ((err = get_int(fd, SO_ACCEPTCONN, &v)) < 0)
    return err;
  return v ? 0 : -EINVAL; /* what accept(2) says of it */
}

int gev__activation_fd(const char *address, int *fd_out, int *family_out)
{
  const char *spec = address + 3;
  long n;
  int fd, err;

  if (!gev__activation_is(address) || !*spec)
    return -EINVAL;
  if (strspn(spec, "0123456789") == strlen(spec)) {
    if ((n = parse_decimal(spec, 1 << 30)) < 0)
      return -EBADF; /* no fd is that large */
    fd = (int)n;
  } else if ((err = lookup_name(spec, &fd)) < 0) {
    return err;
  }
  if ((err = check_socket(fd, family_out)) < 0)
    return err;
  *fd_out = fd;
  return 0;
}

int gev__activation_adopt(int fd)
{
  int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);

  if (fl < 0 || fdf < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, fdf | FD_CLOEXEC) < 0)
    return -errno;
  return 0;
}
