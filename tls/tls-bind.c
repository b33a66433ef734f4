/* tls-bind.c - attaching a context to a server or to outgoing
 * connections, and the sessions outgoing connections resume.
 *
 * An outgoing connection needs a server name besides the context (SNI,
 * and the name its certificate must carry), but a transport has one
 * argument. So the name lives in a tls_bind kept by the context, once per
 * distinct name, for as long as the context: connect options copied into
 * a gev_client for its redials stay valid without an owner of their own. */
#include "tls-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int gev_tls_server_options(gev_options *o, gev_tls_ctx *ctx)
{
  if (!o || !ctx || !ctx->has_cert) {
    gev__tls_set_error("a server needs a context with a certificate");
    return -EINVAL;
  }
  o->transport = gev_tls_transport();
  o->transport_arg = ctx; /* == &ctx->self */
  return 0;
}

int gev_tls_listener_options(gev_listener_options *o, gev_tls_ctx *ctx)
{
  gev_options all = {0};
  int err = o ? gev_tls_server_options(&all, ctx) : -EINVAL;

  if (!err) {
    o->transport = all.transport;
    o->transport_arg = all.transport_arg;
  }
  return err;
}

static bool is_ip(const char *name)
{
  unsigned char a[16];

  return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

/* The host of "host:port", "[v6]:port" or "v4:port" into @p buf. */
static int host_of(const char *addr, char *buf, size_t len)
{
  const char *end;
  size_t n;

  if (!addr || strncmp(addr, "unix:", 5) == 0)
    return -EINVAL;
  if (addr[0] == '[') {
    addr++;
    end = strchr(addr, ']');
  } else {
    end = strrchr(addr, ':');
  }
  n = end ? (size_t)(end - addr) : strlen(addr);
  if (n == 0 || n >= len)
    return -EINVAL;
  memcpy(buf, addr, n);
  buf[n] = '\0';
  return 0;
}

/* The context's bind for @p name, made on first use. */
static tls_bind *bind_for(gev_tls_ctx *x, const char *name)
{
  tls_bind *b;
  size_t n = strlen(name) + 1;

  pthread_mutex_lock(&x->mu);
  for (b = x->self.next; b; b = b->next)
    if (strcmp(b->name, name) == 0)
      break;
  if (!b && (b = calloc(1, sizeof(*b) + n))) {
    char *copy = (char *)(b + 1);
    memcpy(copy, name, n);
    *b = (tls_bind){
        .ctx = x, .name = copy, .is_ip = is_ip(name), .next = x->self.next};
    x->self.next = b;
  }
  pthread_mutex_unlock(&x->mu);
  return b;
}

int gev_tls_connect_options(gev_connect_options *o, gev_tls_ctx *ctx,
                            const char *server_name)
{
  char host[256];
  tls_bind *b;

  if (!o || !ctx) {
    gev__tls_set_error("NULL argument");
    return -EINVAL;
  }
  if (!server_name) {
    if (host_of(o->address, host, sizeof(host)) < 0) {
      gev__tls_set_error("no server name: give one, or a host:port address");
      return -EINVAL;
    }
    server_name = host;
  }
  if (!*server_name || !(b = bind_for(ctx, server_name))) {
    gev__tls_set_error(*server_name ? "out of memory" : "empty server name");
    return *server_name ? -ENOMEM : -EINVAL;
  }
  o->transport = gev_tls_transport();
  o->transport_arg = b;
  return 0;
}

int gev_tls_ws_options(gev_ws_options *wo, gev_tls_ctx *ctx, const char *url)
{
  gev_connect_options co = {0};
  char addr[300];
  const char *p;
  size_t n;
  int err;

  if (!wo || !url) {
    gev__tls_set_error("NULL argument");
    return -EINVAL;
  }
  p = strncmp(url, "wss://", 6) == 0  ? url + 6
      : strncmp(url, "ws://", 5) == 0 ? url + 5
                                      : NULL;
  n = p ? strcspn(p, "/") : 0;
  if (n == 0 || n + 5 > sizeof(addr)) {
    gev__tls_set_error("not a ws:// or wss:// URL with a host");
    return -EINVAL;
  }
  /* host_of wants "host:port": give a bare host a port it ignores. */
  memcpy(addr, p, n);
  addr[n] = '\0';
  if (addr[n - 1] == ']' || !strchr(addr, ':'))
    strcat(addr, ":443");
  co.address = addr;
  if ((err = gev_tls_connect_options(&co, ctx, NULL)) < 0)
    return err;
  wo->transport = co.transport;
  wo->transport_arg = co.transport_arg;
  return 0;
}

/* ---- sessions ----------------------------------------------------------- */

int gev__tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
  tls_conn *t = SSL_get_app_data(ssl);
  tls_bind *b = t ? t->bind : NULL;
  SSL_SESSION *old;

  /* Only named binds: a session is worth offering to the same name only,
   * and the self bind (no name) may reach any server. */
  if (!b || b == &b->ctx->self || SSL_is_server(ssl))
    return 0;
  pthread_mutex_lock(&b->ctx->mu);
  old = b->session;
  b->session = sess; /* 1 below: OpenSSL's reference is ours now */
  pthread_mutex_unlock(&b->ctx->mu);
  SSL_SESSION_free(old);
  return 1;
}

SSL_SESSION *gev__tls_bind_session(tls_bind *b)
{
  SSL_SESSION *s;

  pthread_mutex_lock(&b->ctx->mu);
  s = b->session;
  if (s && !SSL_SESSION_is_resumable(s))
    s = NULL;
  if (s)
    SSL_SESSION_up_ref(s);
  pthread_mutex_unlock(&b->ctx->mu);
  return s;
}
