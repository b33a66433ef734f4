/* serving.c - gev_options.on_serving: the acceptor tells the user once
 * the server is up.
 *
 * Each worker loop reports from its first pass (a task it posted to
 * itself before running), so it has really started; the last report
 * posts the call to the acceptor loop, which accepts (or whose workers
 * accept, with reuse_port) from the moment it runs. The addresses are
 * read back from the listening sockets, so ":0" shows the port picked. */
#include "log-internal.h"
#include "server-internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* "unix:" before a unix path, as gev_options.address writes it. */
static void format_local(int fd, char *buf, size_t n)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  size_t k = 0;

  buf[0] = '\0';
  if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
    return;
  if (ss.ss_family == AF_UNIX && n > 5) {
    memcpy(buf, "unix:", 5);
    k = 5;
  }
  gev__addr_format((struct sockaddr *)&ss, len, buf + k, n - k);
}

enum { ADDR_MAX = GEV__ADDR_STRLEN + 8 };

/* In the acceptor loop, once every worker runs. One string per address,
 * read from its (first) listening socket: with reuse_port the others
 * listen on the same address. */
static void serving_task(void *arg)
{
  gev_server *s = arg;
  const char *none = NULL;
  const char **addrs;
  char *text;

  /* Tasks also run while a loop finishes: then it is not serving. */
  if (s->acceptor->finishing || atomic_load(&s->acceptor->stop) ||
      atomic_load(&s->shutdown))
    return; /* stopped first (a loop runs one pass even then) */
  addrs = calloc((size_t)s->naddrs + 1, sizeof(*addrs));
  text = malloc((size_t)s->naddrs * ADDR_MAX);
  if (!addrs || !text) {
    gev__log(GEV_LOG_ERROR, s->acceptor, NULL,
             "on_serving: no memory for the addresses");
    s->opt.on_serving(s, &none, 0); /* serving all the same */
  } else {
    for (int i = 0; i < s->naddrs; i++) {
      format_local(s->addrs[i].fd, text + (size_t)i * ADDR_MAX, ADDR_MAX);
      addrs[i] = text + (size_t)i * ADDR_MAX;
    }
    s->opt.on_serving(s, addrs, s->naddrs);
  }
  free(addrs);
  free(text);
}

/* In a worker's first pass. A failed post means the acceptor is stopping:
 * the server is not serving, and on_serving is not owed. */
static void loop_up(void *arg)
{
  gev_loop *l = arg;
  gev_server *s = l->server;

  if (!l->finishing && !atomic_load(&l->stop) &&
      atomic_fetch_add(&s->loops_up, 1) + 1 == s->nloops)
    gev_loop_post(s->acceptor, serving_task, s);
}

void gev__serving_watch(gev_server *s, gev_loop *worker)
{
  if (s->opt.on_serving)
    gev_loop_post(worker, loop_up, worker); /* runs in its first pass */
}
