/* listener.c - a server's listening sockets: parsing its addresses,
 * binding or adopting them, accepting, closing.
 *
 * Layout. Address i has one listener on the acceptor loop, which hands
 * what it accepts to the worker loops, or, with reuse_port over TCP, one
 * SO_REUSEPORT listener on each worker loop, which keeps what it accepts.
 * Unix sockets and adopted ("fd:") ones always go through the acceptor:
 * the kernel spreads connections over SO_REUSEPORT sockets only, and an
 * inherited socket is one socket.
 *
 * All or nothing. gev_server_new either binds every address or leaves
 * nothing behind: every address is parsed (and fd: checked) before the
 * first socket opens, and a failed bind closes what the earlier ones
 * opened and removes the unix socket files they created. An adopted fd is
 * the caller's until gev_server_new succeeds, so a failure leaves it open
 * and unchanged. */
#include "server-internal.h"

#include "activation.h"
#include "log-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* Accepts per readiness event: bounded so timers and tasks keep running
 * under a connection storm. */
#define ACCEPT_BATCH 256
/* How long accepting pauses when fds are exhausted and the reserve fd could
 * not be reopened. */
#define EXHAUSTED_RETRY_MS 100

/* ---- accepting -------------------------------------------------------- */

static void resume_accepting(void *arg)
{
  gev__listener *ls = arg;

  ls->retry = 0;
  if (ls->reserve_fd < 0)
    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  gev__loop_io_set(ls->loop, &ls->io, GEV__EV_READ);
}

/* Out of fds, the pending connection cannot be taken and the listener stays
 * readable: without care the loop would spin. Spend the reserve fd to
 * accept and close one connection (the peer sees a close, not a hang), then
 * take the reserve back. If even that fails, stop listening for a while. */
static void on_exhausted(gev__listener *ls, int err)
{
  int fd;

  if (ls->reserve_fd >= 0) {
    close(ls->reserve_fd);
    fd = accept4(ls->io.fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
      close(fd);
    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s; the reserve fd %s%s",
             gev_strerror(-err),
             fd >= 0 ? "took and closed one connection"
                     : "was taken by another open meanwhile",
             ls->reserve_fd >= 0 ? "" : ", and could not be reopened");
    if (ls->reserve_fd >= 0)
      return;
  }
  if (ls->retry)
    return;
  gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s; not accepting for %d ms",
           gev_strerror(-err), EXHAUSTED_RETRY_MS);
  gev__loop_io_set(ls->loop, &ls->io, 0);
  ls->retry =
      gev_loop_run_after(ls->loop, EXHAUSTED_RETRY_MS, resume_accepting, ls);
  if (!ls->retry)
    gev__loop_io_set(ls->loop, &ls->io, GEV__EV_READ);
}

static void listener_cb(gev__io *io, unsigned events)
{
  gev__listener *ls = (gev__listener *)io;

  (void)events;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = accept4(io->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd >= 0) {
      ls->accepted(ls, fd, (struct sockaddr *)&ss, len);
      continue;
    }
    switch (errno) {
    case EINTR:
    case ECONNABORTED: /* the peer gave up while queued */
    case EPROTO:
    case EPERM: /* firewall */ continue;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: on_exhausted(ls, errno); return;
    case EAGAIN: return; /* drained: wait for readiness */
    default:             /* unexpected: wait for readiness, say why */
      gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s",
               gev_strerror(-errno));
      return;
    }
  }
}

/* ---- parsing ---------------------------------------------------------- */

/* One address: fd: checked, anything else parsed (nothing opened yet). */
static int parse_one(gev__listen_addr *a, bool reuse_port)
{
  int err;

  a->adopt_fd = -1;
  if (gev__activation_is(a->text)) {
    err = gev__activation_fd(a->text, &a->adopt_fd, &a->family);
  } else if (strstr(a->text, "://")) {
    err = -EINVAL; /* a URL scheme ("tcp://"): not ours, and not a host */
  } else {
    err = gev__addr_parse(a->text, &a->addr);
    a->family = a->addr.ss.ss_family;
  }
  a->per_worker = !err && reuse_port && a->adopt_fd < 0 && a->family != AF_UNIX;
  return err;
}

/* The address's own transport, else the server's. */
static void set_transport(gev_server *s, int i)
{
  const gev_listener_options *lo =
      s->opt.listener_options ? &s->opt.listener_options[i] : NULL;

  s->addrs[i].tp = s->opt.transport;
  s->addrs[i].tp_arg = s->opt.transport_arg;
  if (lo && lo->transport) {
    s->addrs[i].tp = lo->transport;
    s->addrs[i].tp_arg = lo->transport_arg;
  }
}

static int parse_all(gev_server *s, const char *const *addresses)
{
  int n = 0, err;

  while (addresses[n])
    n++;
  if (n == 0)
    return -EINVAL;
  if (!(s->addrs = calloc((size_t)n, sizeof(*s->addrs))))
    return -ENOMEM;
  s->naddrs = n;
  for (int i = 0; i < n; i++) {
    s->addrs[i].adopt_fd = s->addrs[i].fd = -1;
    atomic_init(&s->addrs[i].keep_path, false);
    set_transport(s, i);
    if (!(s->addrs[i].text = strdup(addresses[i])))
      return -ENOMEM;
    if ((err = parse_one(&s->addrs[i], s->opt.reuse_port)) < 0)
      return err;
  }
  s->opt.listener_options = NULL; /* copied: the caller's may go */
  /* Two listeners on one fd would share its queue and its poller entry. */
  for (int i = 0; i < n; i++)
    for (int j = 0; j < i; j++)
      if (s->addrs[i].adopt_fd >= 0 &&
          s->addrs[i].adopt_fd == s->addrs[j].adopt_fd)
        return -EINVAL;
  return 0;
}

/* ---- opening ---------------------------------------------------------- */

/* The kernel's port for port 0, so that the other workers' SO_REUSEPORT
 * listeners bind the same one. */
static void note_port(gev__listen_addr *a, int fd)
{
  a->port = gev__addr_local_port(fd);
  if (a->adopt_fd >= 0 || a->family == AF_UNIX)
    return;
  if (a->family == AF_INET)
    ((struct sockaddr_in *)&a->addr.ss)->sin_port = htons((uint16_t)a->port);
  else
    ((struct sockaddr_in6 *)&a->addr.ss)->sin6_port = htons((uint16_t)a->port);
}

static int listener_open(gev_server *s, gev__listener *ls, int i, gev_loop *l,
                         gev__accepted_fn fn)
{
  gev__listen_addr *a = &s->addrs[i];
  int err = 0;

  *ls = (gev__listener){.io = {.fd = -1, .cb = listener_cb},
                        .server = s,
                        .loop = l,
                        .index = i,
                        .hand_off = !a->per_worker,
                        .reserve_fd = -1,
                        .accepted = fn};
  ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (a->adopt_fd >= 0) {
    ls->io.fd = a->adopt_fd;
    ls->borrowed = true;
  } else {
    err = gev__addr_listen(&a->addr, s->opt.backlog, a->per_worker, &s->so,
                           &ls->io.fd);
    if (!err && a->family == AF_UNIX &&
        ((struct sockaddr_un *)&a->addr.ss)->sun_path[0])
      a->own_path = true;
  }
  if (!err)
    err = gev__loop_io_add(l, &ls->io, GEV__EV_READ);
  return err;
}

static int count_listeners(const gev_server *s)
{
  int n = 0;

  for (int i = 0; i < s->naddrs; i++)
    n += s->addrs[i].per_worker ? s->nloops : 1;
  return n;
}

static int open_all(gev_server *s, gev__accepted_fn fn)
{
  int k = 0, n = count_listeners(s), err;

  /* nls only once ls exists: roll_back walks nls entries of ls. */
  if (!(s->ls = calloc((size_t)n, sizeof(*s->ls))))
    return -ENOMEM;
  s->nls = n;
  for (int j = 0; j < s->nls; j++)
    s->ls[j].io.fd = s->ls[j].reserve_fd = -1;
  for (int i = 0; i < s->naddrs; i++) {
    int per = s->addrs[i].per_worker ? s->nloops : 1;
    for (int w = 0; w < per; w++) {
      gev_loop *l = s->addrs[i].per_worker ? s->workers[w].loop : s->acceptor;
      if ((err = listener_open(s, &s->ls[k++], i, l, fn)) < 0)
        return err;
      if (w == 0) {
        note_port(&s->addrs[i], s->ls[k - 1].io.fd);
        s->addrs[i].fd = s->ls[k - 1].io.fd;
      }
    }
  }
  return 0;
}

static void close_one(gev__listener *ls)
{
  if (ls->io.fd >= 0 && !ls->borrowed)
    close(ls->io.fd);
  if (ls->reserve_fd >= 0)
    close(ls->reserve_fd);
  ls->io.fd = ls->reserve_fd = -1;
}

/* gev_server_new failed: nothing may stay bound, no file created, and the
 * adopted fds go back as they came, registered nowhere. */
static void roll_back(gev_server *s)
{
  for (int j = 0; j < s->nls; j++) {
    gev__listener *ls = &s->ls[j];
    if (ls->io.registered)
      gev__poller_del(&ls->loop->poller, ls->io.fd);
    ls->io.registered = false;
    close_one(ls);
  }
  for (int i = 0; i < s->naddrs; i++) {
    gev__listen_addr *a = &s->addrs[i];
    if (a->own_path)
      unlink(((struct sockaddr_un *)&a->addr.ss)->sun_path);
    a->own_path = false;
  }
}

int gev__listeners_parse(gev_server *s, const char *const *addresses)
{
  return parse_all(s, addresses);
}

int gev__listeners_open(gev_server *s, gev__accepted_fn fn)
{
  int err;

  if ((err = open_all(s, fn)) < 0)
    goto out_roll_back;
  /* Now the server's: its flags are ours to set, and it closes at free. */
  for (int j = 0; j < s->nls; j++) {
    if (!s->ls[j].borrowed)
      continue;
    if ((err = gev__activation_adopt(s->ls[j].io.fd)) < 0)
      goto out_roll_back;
  }
  for (int j = 0; j < s->nls; j++)
    s->ls[j].borrowed = false;
  return 0;

out_roll_back:
  roll_back(s);
  return err;
}

/* ---- closing ---------------------------------------------------------- */

void gev__listeners_end(gev_server *s, gev_loop *l)
{
  for (int j = 0; j < s->nls; j++) {
    gev__listener *ls = &s->ls[j];
    if (ls->loop != l)
      continue;
    if (ls->io.fd >= 0)
      gev__loop_io_del(l, &ls->io);
    close_one(ls);
  }
}

void gev__listeners_close(gev_server *s, gev_loop *l)
{
  for (int j = 0; j < s->nls; j++)
    if (!l || s->ls[j].loop == l)
      close_one(&s->ls[j]);
}

void gev__listeners_free(gev_server *s)
{
  gev__listeners_close(s, NULL);
  for (int i = 0; i < s->naddrs; i++) {
    gev__listen_addr *a = &s->addrs[i];
    if (a->own_path && !atomic_load(&a->keep_path))
      unlink(((struct sockaddr_un *)&a->addr.ss)->sun_path);
    free(a->text);
  }
  free(s->addrs);
  free(s->ls);
  s->addrs = NULL;
  s->ls = NULL;
  s->naddrs = s->nls = 0;
}
