/* tls-info.c - what a connection's handshake settled, for its handler. */
#include "tls-internal.h"

#include <errno.h>
#include <openssl/x509.h>
#include <string.h>

bool gev_tls_is_tls(const gev_conn *c)
{
  return gev__tls_state(c) != NULL;
}

/* The agreed protocol as one of the context's own names: ALPN gives
 * length and bytes, the caller wants a C string that lives as long as the
 * connection, and the agreed name is always one the context listed. */
const char *gev_tls_alpn(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);
  const gev_tls_ctx *x;
  const unsigned char *p;
  unsigned len;

  if (!t)
    return NULL;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  x = t->bind->ctx;
  for (const char *n = x->alpn_names; p && n && *n; n += strlen(n) + 1)
    if (strlen(n) == len && memcmp(n, p, len) == 0)
      return n;
  return NULL;
}

const char *gev_tls_version(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t ? SSL_get_version(t->ssl) : NULL;
}

const char *gev_tls_cipher(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t ? SSL_get_cipher_name(t->ssl) : NULL;
}

const char *gev_tls_server_name(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

int gev_tls_peer_subject(const gev_conn *c, char *buf, size_t len)
{
  tls_conn *t = gev__tls_state(c);
  X509 *peer;
  BIO *mem;
  char *p;
  long n;

  if (!t || !buf || len == 0)
    return -EINVAL;
  buf[0] = '\0';
  if (!(peer = SSL_get0_peer_certificate(t->ssl)))
    return -ENOENT;
  if (!(mem = BIO_new(BIO_s_mem())))
    return -ENOMEM;
  X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
  n = BIO_get_mem_data(mem, &p);
  if (n < 0)
    n = 0;
  if ((size_t)n >= len)
    n = (long)len - 1;
  memcpy(buf, p, (size_t)n);
  buf[n] = '\0';
  BIO_free(mem);
  return (int)n;
}

long gev_tls_verify_result(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t ? SSL_get_verify_result(t->ssl) : -1;
}

bool gev_tls_session_reused(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t && SSL_session_reused(t->ssl);
}

struct ssl_st *gev_tls_ssl(const gev_conn *c)
{
  tls_conn *t = gev__tls_state(c);

  return t ? t->ssl : NULL;
}
