/* ws-server.c - WebSocket servers: a gev_server whose every connection is
 * a WebSocket (the library reads the handshake), and the upgrade of a
 * connection an HTTP handler has parsed. */
#include "ws-internal.h"

#include <errno.h>
#include <stdlib.h>

/* What a gev_ws_server_new server's connections are made from; the
 * server's user_data. */
typedef struct ws_server {
  gev_ws_handler h;
  gev_ws_options o;
} ws_server;

void gev__ws_server_on_connect(gev_conn *c)
{
  ws_server *srv = gev_server_user_data(gev_conn_server(c));
  gev_ws *ws = gev__ws_new(&srv->h, &srv->o, NULL, false);

  if (!ws) {
    gev_conn_close(c);
    return;
  }
  gev__ws_attach(ws, c);
  /* A client that never finishes its request holds nothing for long. */
  pthread_mutex_lock(&ws->mu);
  gev__ws_arm(ws, &ws->close_timer, ws->o.close_timeout_ms, gev__ws_on_timeout);
  pthread_mutex_unlock(&ws->mu);
}

int gev_ws_server_new(gev_server **out, const gev_ws_handler *h,
                      const gev_ws_options *wo, const gev_options *opt)
{
  gev_handler ch = gev__ws_conn_handler;
  gev_options o;
  ws_server *srv;
  int r;

  if (!out || !h || !opt)
    return -EINVAL;
  if (!(srv = calloc(1, sizeof(*srv))))
    return -ENOMEM;
  srv->h = *h;
  if (wo)
    srv->o = *wo;
  o = *opt;
  o.user_data = srv;
  ch.on_connect = gev__ws_server_on_connect;
  if ((r = gev_server_new(out, &ch, &o)) < 0)
    free(srv);
  return r;
}

void gev_ws_server_free(gev_server *s)
{
  ws_server *srv;

  if (!s)
    return;
  srv = gev_server_user_data(s);
  gev_server_free(s);
  free(srv); /* after the server: no connection reads it any more */
}

int gev_ws_upgrade(gev_conn *c, ringbuffer *in, ringbuffer *out,
                   const gev_ws_handler *h, const gev_ws_options *wo, void *ctx)
{
  gev_ws *ws;
  int r;

  if (!c || !in || !out || !h || !gev_loop_in_thread(gev_conn_loop(c)))
    return -EINVAL;
  if (!(ws = gev__ws_new(h, wo, ctx, false))) {
    gev_conn_close(c);
    return -ENOMEM;
  }
  if ((r = gev__ws_server_handshake(ws, in, out)) == 0) {
    gev__ws_free(ws);
    return -EAGAIN;
  }
  if (gev_conn_set_handler(c, &gev__ws_conn_handler) < 0) {
    gev__ws_free(ws);
    gev_conn_close(c);
    return -ENOMEM;
  }
  gev__ws_attach(ws, c);
  gev__ws_event(ws, r > 0 ? GEV__WE_OPENED : GEV__WE_FAIL, 0, NULL);
  return r > 0 ? 0 : -EPROTO;
}
