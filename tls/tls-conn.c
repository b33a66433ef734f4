/* tls-conn.c - the TLS transport: one connection's open, handshake, read,
 * write, send, shutdown and close, as src/conn.c calls them.
 *
 * Results follow <gev/transport.h>: SSL_ERROR_WANT_READ is -EAGAIN in the
 * operation's own direction and GEV_TRANSPORT_WANT_READ in the other,
 * likewise for WANT_WRITE; close_notify is the end of stream (0). Every
 * call runs in the connection's loop thread. OpenSSL's error queue is per
 * thread and SSL_get_error reads it, so it is cleared before each call
 * (other code in the thread may have left errors behind). */
#include "tls-internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One read() call takes at most this much, at a record boundary, so a
 * fast sender cannot keep the loop on one connection. */
#define READ_BATCH (256 * 1024)

static const gev_transport tls_transport;

/* ---- mapping OpenSSL's results ------------------------------------------ */

/* A failed call: the transport result for @p e, where @p own is the
 * direction of the call (true: reading). */
static int map_error(tls_conn *t, int e, bool own_read)
{
  unsigned long lib;

  switch (e) {
  case SSL_ERROR_WANT_READ: return own_read ? -EAGAIN : GEV_TRANSPORT_WANT_READ;
  case SSL_ERROR_WANT_WRITE:
    return own_read ? GEV_TRANSPORT_WANT_WRITE : -EAGAIN;
  case SSL_ERROR_ZERO_RETURN: return 0;
  case SSL_ERROR_SYSCALL:
    t->fatal = true;
    return t->err ? -t->err : -ECONNRESET;
  default:
    t->fatal = true;
    lib = ERR_peek_last_error();
    ERR_clear_error();
    /* The peer's FIN without close_notify: as plaintext's EOF when it
     * comes between records, a truncated record otherwise. */
    if (ERR_GET_REASON(lib) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
      return gev__tls_bio_at_boundary(t) ? 0 : -ECONNRESET;
    return t->err ? -t->err : -EPROTO;
  }
}

/* ---- the handshake ------------------------------------------------------ */

static void on_timeout(void *arg)
{
  tls_conn *t = arg; /* alive: close() cancels this timer */

  t->timer = 0;
  if (t->done)
    return;
  /* Shutting the socket down makes it readable and writable at once, so
   * the core calls handshake() right away, which then fails with
   * -ETIMEDOUT: an outgoing connection reports exactly that (a
   * gev_conn_close here would report -ECONNABORTED). */
  t->timed_out = true;
  shutdown(t->fd, SHUT_RDWR);
}

static void handshake_done(tls_conn *t)
{
  gev_tls_ctx *x = t->bind->ctx;

  t->done = true;
  if (t->timer)
    gev_loop_cancel(t->loop, t->timer);
  t->timer = 0;
  /* Without read-ahead OpenSSL has read exactly the handshake's records:
   * the stream is at a record boundary (and an odd first record, an
   * SSLv2-format hello, cannot leave the BIO's framing astray). */
  gev__tls_bio_reset(t);
  atomic_fetch_add_explicit(&x->n_ok, 1, memory_order_relaxed);
  if (SSL_session_reused(t->ssl))
    atomic_fetch_add_explicit(&x->n_resumed, 1, memory_order_relaxed);
}

/* Why a handshake failed, as the errno an outgoing connection reports:
 * -EKEYEXPIRED or -EKEYREJECTED for the peer's certificate, -ECONNRESET
 * when the peer went away, -EPROTO for anything else it sent. */
static int handshake_error(tls_conn *t, int e)
{
  long v = SSL_get_verify_result(t->ssl);
  int r;

  if (!t->server && v != X509_V_OK) {
    ERR_clear_error();
    t->fatal = true;
    return v == X509_V_ERR_CERT_HAS_EXPIRED ? -EKEYEXPIRED : -EKEYREJECTED;
  }
  r = map_error(t, e, true);
  return r == 0 ? -ECONNRESET : r; /* close_notify mid-handshake */
}

static int tls_handshake(void *state, int fd)
{
  tls_conn *t = state;
  gev_tls_ctx *x = t->bind->ctx;
  int r;

  (void)fd;
  if (t->timed_out) {
    atomic_fetch_add_explicit(&x->n_timed_out, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->n_failed, 1, memory_order_relaxed);
    return -ETIMEDOUT;
  }
  if (t->server && !t->want_write &&
      !gev__tls_pace_take(t->loop, x->per_pass)) {
    atomic_fetch_add_explicit(&x->n_deferred, 1, memory_order_relaxed);
    return GEV_TRANSPORT_WANT_READ; /* next pass: see tls-pace.c */
  }
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    handshake_done(t);
    return 0;
  }
  r = SSL_get_error(t->ssl, r);
  t->want_write = r == SSL_ERROR_WANT_WRITE;
  if (r == SSL_ERROR_WANT_READ)
    return GEV_TRANSPORT_WANT_READ;
  if (r == SSL_ERROR_WANT_WRITE)
    return GEV_TRANSPORT_WANT_WRITE;
  atomic_fetch_add_explicit(&x->n_failed, 1, memory_order_relaxed);
  return handshake_error(t, r);
}

/* ---- open and close ----------------------------------------------------- */

/* An outgoing connection: SNI, the name to verify, a session to resume. */
static int setup_client(tls_conn *t, gev_conn *c)
{
  tls_bind *b = t->bind;
  X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
  char ip[64];
  SSL_SESSION *s;
  int ok = 1;

  SSL_set_verify(t->ssl,
                 b->ctx->verify == GEV_TLS_VERIFY_NONE ? SSL_VERIFY_NONE
                                                       : SSL_VERIFY_PEER,
                 NULL);
  if (b->name && !b->is_ip) {
    ok = SSL_set_tlsext_host_name(t->ssl, b->name) == 1 &&
         SSL_set1_host(t->ssl, b->name) == 1;
  } else if (b->name) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(vp, b->name) == 1;
  } else if (gev_conn_peer_addr(c)[0] != '/') {
    /* "ip:port" or "[v6]:port": verify the address we reached. */
    const char *p = gev_conn_peer_addr(c), *end;
    size_t n;
    if (*p == '[')
      p++;
    end = strrchr(p, p[-1] == '[' ? ']' : ':');
    n = end ? (size_t)(end - p) : strlen(p);
    if (n >= sizeof(ip))
      return -EINVAL;
    memcpy(ip, p, n);
    ip[n] = '\0';
    ok = X509_VERIFY_PARAM_set1_ip_asc(vp, ip) == 1;
  }
  if (ok && (s = gev__tls_bind_session(b))) {
    SSL_set_session(t->ssl, s);
    SSL_SESSION_free(s);
  }
  return ok ? 0 : -ENOMEM;
}

static int tls_open(gev_conn *c, void *arg, void **state)
{
  tls_bind *b = arg;
  tls_conn *t;
  BIO *bio;

  if (!b || !(t = calloc(1, sizeof(*t))))
    return b ? -ENOMEM : -EINVAL;
  *state = t; /* close() frees it, also when open fails */
  t->c = c;
  t->bind = b;
  t->loop = gev_conn_loop(c);
  t->fd = gev_conn_fd(c);
  t->server = gev_conn_listener(c) >= 0;
  t->budget = SIZE_MAX;
  gev_tls_ctx_ref(b->ctx);
  if (!(t->ssl = SSL_new(b->ctx->ssl)) ||
      !(bio = gev__tls_bio_new(b->ctx->bio, t)))
    return -ENOMEM;
  SSL_set_bio(t->ssl, bio, bio);
  SSL_set_app_data(t->ssl, t);
  if (t->server)
    SSL_set_accept_state(t->ssl);
  else
    SSL_set_connect_state(t->ssl);
  if (!t->server && setup_client(t, c) < 0)
    return -ENOMEM;
  if (b->ctx->timeout_ms > 0 &&
      !(t->timer = gev_loop_run_after(t->loop, (uint64_t)b->ctx->timeout_ms,
                                      on_timeout, t)))
    return -ENOMEM;
  return 0;
}

/* Closing: close_notify (one attempt, the fd closes right after) unless
 * the session is broken or never got going. */
static void tls_close(void *state)
{
  tls_conn *t = state;

  if (!t)
    return;
  if (t->timer)
    gev_loop_cancel(t->loop, t->timer);
  if (t->ssl && t->done && !t->fatal &&
      !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)) {
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
  }
  SSL_free(t->ssl); /* and the BIO */
  gev_tls_ctx_unref(t->bind->ctx);
  free(t);
}

/* ---- moving bytes ------------------------------------------------------- */

static ssize_t tls_read(void *state, int fd, ringbuffer *in)
{
  tls_conn *t = state;
  unsigned char buf[TLS_RECORD_MAX];
  size_t total = 0, room;
  int n;

  (void)fd;
  if (!t->done)
    return -ENOTCONN; /* closed in its handshake: nothing to read for */
  t->refused = false;
  do {
    size_t lim = ringbuffer_limit(in), len = ringbuffer_len(in);

    room = !lim ? SIZE_MAX : lim > len ? lim - len : 0;
    if (room == 0)
      return total > 0 ? (ssize_t)total : -ENOBUFS;
    t->budget = room; /* the BIO admits only records that fit */
    ERR_clear_error();
    n = SSL_read(t->ssl, buf,
                 room < sizeof(buf) ? (int)room : (int)sizeof(buf));
    t->budget = SIZE_MAX;
    if (n <= 0)
      break;
    if (ringbuffer_write(in, buf, (size_t)n) < 0)
      return -ENOMEM; /* n <= room: only growth can fail */
    total += (size_t)n;
  } while (total < READ_BATCH || !gev__tls_bio_at_boundary(t));
  if (n <= 0 && !t->refused && gev__tls_bio_at_boundary(t) &&
      SSL_get_error(t->ssl, n) == SSL_ERROR_WANT_READ) {
    /* Idle now: drop the 16 KiB+ read buffer. RELEASE_BUFFERS frees it
     * only after application data, so a connection that has done its
     * handshake and waits for its first request would keep it. */
    SSL_free_buffers(t->ssl);
    return total > 0 ? (ssize_t)total : -EAGAIN;
  }
  if (total > 0)
    return (ssize_t)total;
  if (t->refused)
    return -ENOBUFS; /* a record that would not fit: it waits in the kernel */
  return map_error(t, SSL_get_error(t->ssl, n), true);
}

/* One SSL_write of @p n bytes: the bytes taken, or a transport result. */
static ssize_t write_some(tls_conn *t, const void *p, size_t n)
{
  int len = n > INT_MAX ? INT_MAX : (int)n, r;

  ERR_clear_error();
  r = SSL_write(t->ssl, p, len);
  if (r > 0) {
    t->wpend = 0;
    return r;
  }
  /* The retry must offer at least the record OpenSSL keeps pending. */
  if (t->wpend < (size_t)len)
    t->wpend = (size_t)len < TLS_RECORD_MAX ? (size_t)len : TLS_RECORD_MAX;
  r = map_error(t, SSL_get_error(t->ssl, r), false);
  return r == 0 ? -EPIPE : r; /* the peer's close_notify cannot stop us */
}

static ssize_t tls_write(void *state, int fd, ringbuffer *out)
{
  tls_conn *t = state;
  size_t total = 0;
  ssize_t r = 0;

  (void)fd;
  if (!t->done)
    return -ENOTCONN;
  while (!ringbuffer_empty(out)) {
    struct iovec seg[2];
    size_t len = ringbuffer_len(out);
    const void *p;

    ringbuffer_peek(out, len, seg);
    p = seg[0].iov_base;
    len = seg[0].iov_len;
    if (t->wpend > len) { /* the pending record straddles the wrap */
      len = t->wpend < ringbuffer_len(out) ? t->wpend : ringbuffer_len(out);
      p = ringbuffer_linearize(out, len);
    }
    if ((r = write_some(t, p, len)) <= 0)
      break;
    ringbuffer_retrieve(out, (size_t)r);
    total += (size_t)r;
  }
  return total > 0 ? (ssize_t)total : r;
}

static ssize_t tls_send(void *state, int fd, const void *p, size_t n)
{
  tls_conn *t = state;
  size_t total = 0;
  ssize_t r = 0;

  (void)fd;
  while (total < n) {
    if ((r = write_some(t, (const char *)p + total, n - total)) <= 0)
      break;
    total += (size_t)r;
  }
  return total > 0 || r == -EAGAIN ? (ssize_t)total : r;
}

static int tls_shutdown(void *state, int fd)
{
  tls_conn *t = state;
  int r;

  if (t->done && !t->fatal) {
    ERR_clear_error();
    r = SSL_shutdown(t->ssl); /* 0: sent, the peer's is still to come */
    if (r < 0) {
      r = map_error(t, SSL_get_error(t->ssl, r), false);
      if (r == -EAGAIN || r == GEV_TRANSPORT_WANT_READ)
        return r;
      /* broken: a FIN is all that is left */
    }
  }
  return shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

static const gev_transport tls_transport = {
    .open = tls_open,
    .read = tls_read,
    .write = tls_write,
    .send = tls_send,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .handshake = tls_handshake,
};

const gev_transport *gev_tls_transport(void)
{
  return &tls_transport;
}

tls_conn *gev__tls_state(const gev_conn *c)
{
  if (!c || gev_conn_transport(c) != &tls_transport)
    return NULL;
  return gev_conn_transport_state(c);
}
