/* addr.c - parsing "host:port" and "unix:/path", and listening sockets. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_port(const char *s, uint16_t *port)
{
  unsigned long v = 0;

  if (!*s)
    return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -EINVAL;
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > 65535)
      return -EINVAL;
  }
  *port = (uint16_t)v;
  return 0;
}

static int parse_unix(const char *path, gev__addr *out)
{
  struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
  size_t n = strlen(path);

  if (n == 0)
    return -EINVAL;
  if (n >= sizeof(sun->sun_path))
    return -ENAMETOOLONG;
  memset(sun, 0, sizeof(*sun));
  sun->sun_family = AF_UNIX;
  memcpy(sun->sun_path, path, n);
  if (path[0] == '@')
    sun->sun_path[0] = '\0'; /* Linux abstract namespace */
  out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                         (path[0] == '@' ? 0 : 1));
  return 0;
}

/* A numeric address first; a name only through the resolver. */
static int parse_host(const char *host, bool v6, uint16_t port, gev__addr *out)
{
  struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;

  memset(&out->ss, 0, sizeof(out->ss));
  if (!v6 && (!*host || inet_pton(AF_INET, host, &sin->sin_addr) == 1)) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(*sin);
    return 0;
  }
  if (v6) {
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
      return -EINVAL;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    out->len = sizeof(*sin6);
    return 0;
  }
  if (strchr(host, ':'))
    return -EINVAL; /* IPv6 needs brackets */
  if (strspn(host, "0123456789.") == strlen(host)) {
    /* Digits and dots are an IPv4 literal, never a name: the short forms
     * getaddrinfo would take ("127.1") are accepted, and a malformed one
     * ("1.2.3.4.5") is refused here rather than sent to DNS, where it
     * costs resolver timeouts or draws a wildcard answer. */
    if (inet_aton(host, &sin->sin_addr) == 0)
      return -EINVAL;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(*sin);
    return 0;
  }
  if (getaddrinfo(host, NULL, &hints, &res) != 0)
    return -EINVAL;
  memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
  out->len = res->ai_addrlen;
  freeaddrinfo(res);
  if (out->ss.ss_family == AF_INET)
    sin->sin_port = htons(port);
  else
    sin6->sin6_port = htons(port);
  return 0;
}

int gev__addr_parse(const char *s, gev__addr *out)
{
  char host[256];
  const char *colon, *hs = s;
  size_t hlen;
  uint16_t port;
  bool v6 = false;

  if (!s)
    return -EINVAL;
  if (strncmp(s, "unix:", 5) == 0)
    return parse_unix(s + 5, out);
  if (*s == '[') {
    const char *end = strchr(s, ']');
    if (!end || end[1] != ':')
      return -EINVAL;
    hs = s + 1;
    hlen = (size_t)(end - hs);
    colon = end + 1;
    v6 = true;
  } else {
    colon = strrchr(s, ':');
    if (!colon)
      return -EINVAL;
    hlen = (size_t)(colon - s);
  }
  if (hlen >= sizeof(host) || parse_port(colon + 1, &port) < 0)
    return -EINVAL;
  memcpy(host, hs, hlen);
  host[hlen] = '\0';
  return parse_host(host, v6, port, out);
}

static int set_opt(int fd, int level, int name)
{
  int one = 1;

  return setsockopt(fd, level, name, &one, sizeof(one)) < 0 ? -errno : 0;
}

/* A unix socket file that nobody accepts on is left over from a process
 * that died: it may be replaced. One that accepts is in use. */
static bool unix_path_is_stale(const gev__addr *a)
{
  const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
  struct stat st;
  int fd, r;

  if (sun->sun_path[0] == '\0' || stat(sun->sun_path, &st) < 0 ||
      !S_ISSOCK(st.st_mode))
    return false;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
  r = r < 0 && errno == ECONNREFUSED;
  close(fd);
  return r;
}

static int bind_listen(int fd, const gev__addr *a, int backlog)
{
  const struct sockaddr *sa = (const struct sockaddr *)&a->ss;

  if (bind(fd, sa, a->len) < 0) {
    int err = errno;
    if (err != EADDRINUSE || sa->sa_family != AF_UNIX || !unix_path_is_stale(a))
      return -err;
    unlink(((const struct sockaddr_un *)sa)->sun_path);
    if (bind(fd, sa, a->len) < 0)
      return -errno;
  }
  return listen(fd, backlog) < 0 ? -errno : 0;
}

int gev__addr_dual_stack(int fd, const gev__addr *a)
{
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
  int zero = 0;

  if (a->ss.ss_family != AF_INET6 || !IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
    return 0;
  return setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0
             ? -errno
             : 0;
}

int gev__addr_listen(const gev__addr *a, int backlog, bool reuse_port,
                     const gev__sockopts *so, int *fd_out)
{
  int family = a->ss.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = 0;

  if (fd < 0)
    return -errno;
  if (family != AF_UNIX) {
    err = set_opt(fd, SOL_SOCKET, SO_REUSEADDR);
    if (!err && reuse_port)
      err = set_opt(fd, SOL_SOCKET, SO_REUSEPORT);
    if (!err)
      err = gev__addr_dual_stack(fd, a);
  }
  if (!err && so)
    err = gev__sockopts_buffers(fd, so); /* inherited by accepted sockets */
  if (!err)
    err = bind_listen(fd, a, backlog);
  if (err) {
    close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

/* Decimal digits of v at p; returns the end. */
static char *put_dec(char *p, unsigned v)
{
  char tmp[10];
  int n = 0;

  do
    tmp[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

/* Copies the n bytes at src into buf of size cap, cut to fit, terminated. */
static void put_cut(char *buf, size_t cap, const char *src, size_t n)
{
  if (cap == 0)
    return;
  if (n >= cap)
    n = cap - 1;
  memcpy(buf, src, n);
  buf[n] = '\0';
}

/* Every accepted connection formats its peer once: inet_ntop and snprintf
 * cost about 2,800 instructions there, a third of what the library spends
 * on a short connection (callgrind), so IPv4 - the common case - is written
 * by hand, and IPv6 keeps inet_ntop (its zero compression) without the
 * snprintf. */
void gev__addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                      size_t n)
{
  char out[GEV__ADDR_STRLEN], *p = out;

  if (n > 0)
    buf[0] = '\0';
  if (!sa || len < sizeof(sa_family_t) || n == 0)
    return;
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    const unsigned char *b = (const unsigned char *)&sin->sin_addr;
    for (int i = 0; i < 4; i++) {
      p = put_dec(p, b[i]);
      *p++ = i < 3 ? '.' : ':';
    }
    p = put_dec(p, ntohs(sin->sin_port));
    put_cut(buf, n, out, (size_t)(p - out));
  } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    *p++ = '[';
    if (!inet_ntop(AF_INET6, &sin6->sin6_addr, p, INET6_ADDRSTRLEN))
      return;
    p += strlen(p);
    *p++ = ']';
    *p++ = ':';
    p = put_dec(p, ntohs(sin6->sin6_port));
    put_cut(buf, n, out, (size_t)(p - out));
  } else if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
    size_t plen = len - offsetof(struct sockaddr_un, sun_path);
    if (len <= offsetof(struct sockaddr_un, sun_path))
      return; /* unnamed */
    if (sun->sun_path[0] == '\0')
      snprintf(buf, n, "@%.*s", (int)(plen - 1), sun->sun_path + 1);
    else
      snprintf(buf, n, "%.*s", (int)strnlen(sun->sun_path, plen),
               sun->sun_path);
  }
}

int gev__addr_local_port(int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);

  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}
