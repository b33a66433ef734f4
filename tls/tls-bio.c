/* tls-bio.c - the BIO under every TLS connection: the socket itself, read
 * with recv and written with send(MSG_NOSIGNAL).
 *
 * Why not OpenSSL's socket BIO: it writes with write(), which raises
 * SIGPIPE on a reset peer, and gev never does. Why not memory BIOs: they
 * cost a copy each way and a buffer per connection; this way OpenSSL's
 * records go straight to the kernel, and with SSL_MODE_RELEASE_BUFFERS an
 * idle connection holds no record buffer.
 *
 * The read side also follows the record framing (5-byte header, then the
 * body) to let a record's body in only when read() said its plaintext
 * will fit into the connection's input buffer (`budget`). A record left
 * half-read in the kernel keeps the socket readable, so the core calls
 * again once there is room; decrypted bytes left inside OpenSSL would not
 * (nothing on the socket announces them). */
#include "tls-internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>

static int bio_create(BIO *b)
{
  BIO_set_init(b, 1);
  return 1;
}

static int bio_destroy(BIO *b)
{
  BIO_set_data(b, NULL);
  return 1;
}

/* A failed recv or send: retry for EAGAIN, else keep the errno for the
 * transport's error mapping. */
static int io_failed(BIO *b, tls_conn *t, bool reading)
{
  int e = errno;

  if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) {
    if (reading)
      BIO_set_retry_read(b);
    else
      BIO_set_retry_write(b);
  } else {
    t->err = e;
  }
  return -1;
}

/* The next part of the stream may be read: up to @p len of the header, or
 * of the admitted body. 0: hold back (the body would not fit). */
static size_t may_read(tls_conn *t, size_t len)
{
  size_t want;

  if (t->hdr_have < sizeof(t->hdr)) {
    want = sizeof(t->hdr) - t->hdr_have;
  } else {
    if (!t->admitted) {
      /* An AEAD record's body is its plaintext plus at least a 16-byte
       * tag (and, in TLS 1.3, the content type byte): the bound is
       * exact enough that a record filling `in` to the byte gets in. */
      size_t slack = !t->done                                ? 0
                     : SSL_version(t->ssl) == TLS1_3_VERSION ? 17
                                                             : 16;
      size_t plain = t->body_left > slack ? t->body_left - slack : 0;
      if (plain > t->budget) {
        t->refused = true;
        return 0;
      }
      t->admitted = true;
    }
    want = t->body_left;
  }
  return len < want ? len : want;
}

/* Accounts for @p n bytes read at @p p. */
static void advance(tls_conn *t, const unsigned char *p, size_t n)
{
  if (t->hdr_have < sizeof(t->hdr)) {
    for (size_t i = 0; i < n; i++)
      t->hdr[t->hdr_have++] = p[i];
    if (t->hdr_have == sizeof(t->hdr)) {
      t->body_left = (size_t)t->hdr[3] << 8 | t->hdr[4];
      t->admitted = false;
      if (t->body_left == 0)
        t->hdr_have = 0;
    }
    return;
  }
  t->body_left -= n;
  if (t->body_left == 0)
    t->hdr_have = 0;
}

static int bio_read(BIO *b, char *buf, int len)
{
  tls_conn *t = BIO_get_data(b);
  size_t want;
  ssize_t n;

  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  want = may_read(t, (size_t)len);
  if (want == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  n = recv(t->fd, buf, want, 0);
  if (n < 0)
    return io_failed(b, t, true);
  advance(t, (const unsigned char *)buf, (size_t)n);
  return (int)n; /* 0: the peer's FIN */
}

static int bio_write(BIO *b, const char *buf, int len)
{
  tls_conn *t = BIO_get_data(b);
  ssize_t n;

  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
  if (n < 0)
    return io_failed(b, t, false);
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
  (void)b;
  (void)num;
  (void)ptr;
  /* Writes go straight to the socket: there is nothing to flush. Every
   * other control is unsupported (0), as a plain socket BIO answers. */
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

BIO_METHOD *gev__tls_bio_method(void)
{
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gev socket");

  if (!m)
    return NULL;
  if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
      !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
      !BIO_meth_set_destroy(m, bio_destroy)) {
    BIO_meth_free(m);
    return NULL;
  }
  return m;
}

BIO *gev__tls_bio_new(BIO_METHOD *m, tls_conn *t)
{
  BIO *b = BIO_new(m);

  if (b)
    BIO_set_data(b, t);
  return b;
}

void gev__tls_bio_reset(tls_conn *t)
{
  t->hdr_have = 0;
  t->body_left = 0;
  t->admitted = false;
}

bool gev__tls_bio_at_boundary(const tls_conn *t)
{
  return t->hdr_have == 0;
}
