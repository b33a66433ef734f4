/* ws-client.c - WebSocket clients: a URL, a gev_loop_connect, the
 * handshake request, then the same connection handler as servers use. */
#include "conn-internal.h"
#include "ws-internal.h"

#include <gev/client.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 10000

/* "ws://host[:port][/path]" (or wss://) to "host:port" (also the Host
 * header; a v6 literal keeps its brackets) and the path ("/" when
 * absent); *tls says which scheme. */
static int parse_url(const char *url, char *hostport, size_t cap,
                     const char **path, bool *tls)
{
  const char *p, *slash, *end;
  size_t hl;

  *tls = strncmp(url, "wss://", 6) == 0;
  if (!*tls && strncmp(url, "ws://", 5) != 0)
    return strstr(url, "://") ? -EPROTONOSUPPORT : -EINVAL;
  p = url + (*tls ? 6 : 5);
  slash = strchr(p, '/');
  end = slash ? slash : p + strlen(p);
  *path = slash ? slash : "/";
  hl = (size_t)(end - p);
  if (hl == 0 || hl + 5 > cap)
    return -EINVAL;
  memcpy(hostport, p, hl);
  hostport[hl] = '\0';
  /* No port: the last ':' is absent, or inside a v6 literal. */
  const char *colon = strrchr(hostport, ':');
  if (!colon || (hostport[0] == '[' && hostport[hl - 1] == ']'))
    strcat(hostport, *tls ? ":443" : ":80");
  return 0;
}

static void on_result(gev_conn *c, int err, void *arg)
{
  gev_ws *ws = arg;

  if (err < 0) {
    if (ws->h.on_fail)
      ws->h.on_fail(ws->ctx, err);
    gev__ws_free(ws);
    return;
  }
  gev__ws_attach(ws, c);
}

static void on_connect(gev_conn *c)
{
  gev_ws *ws = gev_conn_context(c);
  int r = gev_conn_send(c, ws->request, strlen(ws->request));

  free(ws->request);
  ws->request = NULL;
  pthread_mutex_lock(&ws->mu);
  gev__ws_arm(ws, &ws->close_timer, ws->o.connect_timeout_ms,
              gev__ws_on_timeout);
  pthread_mutex_unlock(&ws->mu);
  if (r < 0) {
    ws->hs_err = r;
    gev__ws_event(ws, GEV__WE_FAIL, 0, NULL);
  }
}

int gev_ws_connect(gev_loop *l, const char *url, const gev_ws_handler *h,
                   const gev_ws_options *wo, void *ctx)
{
  gev_handler ch = gev__ws_conn_handler;
  gev_connect_options co = {0};
  char hostport[300];
  const char *path;
  bool tls;
  gev_ws *ws;
  int r;

  if (!l || !url || !h)
    return -EINVAL;
  if ((r = parse_url(url, hostport, sizeof(hostport), &path, &tls)) < 0)
    return r;
  if (tls && !(wo && wo->transport))
    return -EPROTONOSUPPORT; /* TLS lives in libgev-tls */
  if (!(ws = gev__ws_new(h, wo, ctx, true)))
    return -ENOMEM;
  if (!ws->o.connect_timeout_ms)
    ws->o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
  if ((r = gev__ws_client_request(ws, hostport, path)) < 0) {
    gev__ws_free(ws);
    return r;
  }
  ch.on_connect = on_connect;
  co.address = hostport;
  co.timeout_ms = ws->o.connect_timeout_ms;
  co.context = ws;
  co.on_result = on_result;
  co.arg = ws;
  co.transport = ws->o.transport;
  co.transport_arg = ws->o.transport_arg;
  if ((r = gev__loop_connect_owned(l, &ch, &co, gev__ws_free)) < 0)
    gev__ws_free(ws);
  return r;
}
