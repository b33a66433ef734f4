/* tls-ctx.c - the TLS context: options turned into OpenSSL SSL_CTXs (one
 * per certificate, all with the same settings), its reference count, and
 * the last error of the calling thread. */
#include "tls-internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No default listed in tls.h may change without changing it there too. */
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_PER_PASS 16

static _Thread_local char tl_error[256];

void gev__tls_set_error(const char *what)
{
  unsigned long e = ERR_get_error();
  char ossl[160] = "";

  if (e)
    ERR_error_string_n(e, ossl, sizeof(ossl));
  snprintf(tl_error, sizeof(tl_error), "%s%s%s", what, e ? ": " : "", ossl);
  ERR_clear_error();
}

const char *gev_tls_error(void)
{
  return tl_error;
}

/* ---- ALPN --------------------------------------------------------------- */

/* The NULL-terminated list in wire format (each name after its length). */
static int alpn_encode(gev_tls_ctx *x, const char *const *names)
{
  size_t len = 0, off = 0;

  for (size_t i = 0; names[i]; i++) {
    size_t n = strlen(names[i]);
    if (n == 0 || n > 255) {
      gev__tls_set_error("ALPN names must have 1 to 255 bytes");
      return -EINVAL;
    }
    len += 1 + n;
  }
  if (len == 0)
    return 0;
  if (!(x->alpn = malloc(len)) || !(x->alpn_names = malloc(len + 1)))
    return -ENOMEM;
  for (size_t i = 0; names[i]; i++) {
    size_t n = strlen(names[i]);
    memcpy(x->alpn_names + off, names[i], n + 1);
    x->alpn[off++] = (unsigned char)n;
    memcpy(x->alpn + off, names[i], n);
    off += n;
  }
  x->alpn_names[len] = '\0';
  x->alpn_len = len;
  return 0;
}

/* Server: our most preferred protocol that the client offers; none (no
 * ALPN in the answer) when there is no overlap. */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
  gev_tls_ctx *x = arg;
  unsigned char *sel;

  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, x->alpn, (unsigned)x->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* ---- SNI ---------------------------------------------------------------- */

static int pick_cert(gev_tls_ctx *x, const char *name)
{
  if (x->sni_fn)
    return x->sni_fn(name, x->sni_arg);
  for (size_t i = 0; i < x->nsni; i++) {
    X509 *leaf = SSL_CTX_get0_certificate(x->sni[i]);
    if (leaf && X509_check_host(leaf, name, 0, 0, NULL) == 1)
      return (int)i;
  }
  return -1;
}

/* Server: the client named a host; switch to its certificate. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
  gev_tls_ctx *x = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  int i;

  if (!name || SSL_is_server(ssl) == 0)
    return SSL_TLSEXT_ERR_OK;
  i = pick_cert(x, name);
  if (i == -1)
    return SSL_TLSEXT_ERR_OK;
  if (i < 0 || (size_t)i >= x->nsni) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  SSL_set_SSL_CTX(ssl, x->sni[i]);
  return SSL_TLSEXT_ERR_OK;
}

/* ---- building one SSL_CTX ----------------------------------------------- */

static int load_cert(SSL_CTX *s, const char *cert, const char *key)
{
  char what[300];

  if (SSL_CTX_use_certificate_chain_file(s, cert) != 1) {
    snprintf(what, sizeof(what), "cannot load certificate %s", cert);
    gev__tls_set_error(what);
    return -EINVAL;
  }
  if (SSL_CTX_use_PrivateKey_file(s, key ? key : cert, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(s) != 1) {
    snprintf(what, sizeof(what), "cannot load the key %s for %s",
             key ? key : cert, cert);
    gev__tls_set_error(what);
    return -EINVAL;
  }
  return 0;
}

static int server_verify_mode(gev_tls_verify v)
{
  switch (v) {
  case GEV_TLS_VERIFY_PEER: return SSL_VERIFY_PEER;
  case GEV_TLS_VERIFY_REQUIRE_CLIENT_CERT:
    return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  default: return SSL_VERIFY_NONE;
  }
}

/* Trust anchors, and the issuers a server names to its clients. */
static int load_trust(SSL_CTX *s, const gev_tls_options *o)
{
  if (o->ca_file || o->ca_dir) {
    if (SSL_CTX_load_verify_locations(s, o->ca_file, o->ca_dir) != 1) {
      gev__tls_set_error("cannot load the CA file or directory");
      return -EINVAL;
    }
  } else if (SSL_CTX_set_default_verify_paths(s) != 1) {
    gev__tls_set_error("cannot use the default CA store");
    return -EINVAL;
  }
  if (o->ca_file && server_verify_mode(o->verify) != SSL_VERIFY_NONE) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
    if (names)
      SSL_CTX_set_client_CA_list(s, names); /* takes them */
  }
  return 0;
}

static int set_versions(SSL_CTX *s, const gev_tls_options *o)
{
  int min = o->min_version ? o->min_version : GEV_TLS_1_2;

  if ((min != GEV_TLS_1_2 && min != GEV_TLS_1_3) ||
      (o->max_version && o->max_version != GEV_TLS_1_2 &&
       o->max_version != GEV_TLS_1_3) ||
      (o->max_version && o->max_version < min)) {
    gev__tls_set_error("versions: min and max must be GEV_TLS_1_2 or _1_3");
    return -EINVAL;
  }
  if (SSL_CTX_set_min_proto_version(s, min) != 1 ||
      SSL_CTX_set_max_proto_version(s, o->max_version) != 1 ||
      (o->ciphers && SSL_CTX_set_cipher_list(s, o->ciphers) != 1) ||
      (o->ciphersuites && SSL_CTX_set_ciphersuites(s, o->ciphersuites) != 1)) {
    gev__tls_set_error("bad version or cipher settings");
    return -EINVAL;
  }
  return 0;
}

static int configure(gev_tls_ctx *x, SSL_CTX *s, const gev_tls_options *o)
{
  static const unsigned char sid[] = "gev";
  int err;

  /* Partial writes: SSL_write returns after each record, as write() does
   * after what the kernel took. Moving buffer: a retried write may come
   * from elsewhere (the ring buffer wraps, the core adopts storage).
   * Release buffers: an idle connection pins no 16 KiB+ record buffers. */
  SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  /* No renegotiation: a write that must wait for the peer's handshake
   * in the middle of a stream buys nothing but risk. */
  SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION |
                             (o->disable_tickets ? SSL_OP_NO_TICKET : 0));
  /* Tickets resume sessions without a server-side store, so the server
   * keeps none (it would grow with every handshake); clients hand theirs
   * to gev__tls_new_session. */
  SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT |
                                        SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(s, gev__tls_new_session);
  SSL_CTX_set_session_id_context(s, sid, sizeof(sid) - 1);
  SSL_CTX_set_verify(s, server_verify_mode(o->verify), NULL);
  if ((err = set_versions(s, o)) < 0 || (err = load_trust(s, o)) < 0)
    return err;
  if (x->alpn) {
    SSL_CTX_set_alpn_select_cb(s, alpn_select, x);
    if (SSL_CTX_set_alpn_protos(s, x->alpn, (unsigned)x->alpn_len) != 0)
      return -ENOMEM;
  }
  return 0;
}

static SSL_CTX *new_ssl_ctx(gev_tls_ctx *x, const gev_tls_options *o,
                            const char *cert, const char *key, int *err)
{
  SSL_CTX *s = SSL_CTX_new(TLS_method());

  if (!s) {
    gev__tls_set_error("SSL_CTX_new");
    *err = -ENOMEM;
    return NULL;
  }
  if ((*err = configure(x, s, o)) < 0 ||
      (cert && (*err = load_cert(s, cert, key)) < 0)) {
    SSL_CTX_free(s);
    return NULL;
  }
  return s;
}

/* ---- the context -------------------------------------------------------- */

static void ctx_free(gev_tls_ctx *x)
{
  tls_bind *b = x->self.next;

  while (b) {
    tls_bind *next = b->next;
    SSL_SESSION_free(b->session);
    free(b);
    b = next;
  }
  for (size_t i = 0; i < x->nsni; i++)
    SSL_CTX_free(x->sni[i]);
  free(x->sni);
  SSL_CTX_free(x->ssl);
  BIO_meth_free(x->bio);
  free(x->alpn);
  free(x->alpn_names);
  free((char *)x->self.name);
  pthread_mutex_destroy(&x->mu);
  free(x);
}

static int check_options(const gev_tls_options *o)
{
  if ((o->num_sni_certs && !o->sni_certs) ||
      (o->num_sni_certs && !o->cert_file) || o->num_sni_certs > 1000 ||
      o->verify < GEV_TLS_VERIFY_DEFAULT ||
      o->verify > GEV_TLS_VERIFY_REQUIRE_CLIENT_CERT) {
    gev__tls_set_error("bad options (SNI certificates need a default one)");
    return -EINVAL;
  }
  for (size_t i = 0; i < o->num_sni_certs; i++)
    if (!o->sni_certs[i].cert_file) {
      gev__tls_set_error("an SNI certificate without a file");
      return -EINVAL;
    }
  return 0;
}

/* Everything but the SSL_CTXs. */
static int ctx_init(gev_tls_ctx *x, const gev_tls_options *o)
{
  x->self.ctx = x;
  atomic_init(&x->refs, 1);
  pthread_mutex_init(&x->mu, NULL);
  x->verify = o->verify;
  x->has_cert = o->cert_file != NULL;
  x->timeout_ms =
      o->handshake_timeout_ms ? o->handshake_timeout_ms : DEFAULT_TIMEOUT_MS;
  x->per_pass =
      o->handshakes_per_pass ? o->handshakes_per_pass : DEFAULT_PER_PASS;
  if (o->server_name && !(x->self.name = strdup(o->server_name)))
    return -ENOMEM;
  if (!(x->bio = gev__tls_bio_method()))
    return -ENOMEM;
  return o->alpn ? alpn_encode(x, o->alpn) : 0;
}

static int build_ssl_ctxs(gev_tls_ctx *x, const gev_tls_options *o)
{
  int err = 0;

  if (!(x->ssl = new_ssl_ctx(x, o, o->cert_file, o->key_file, &err)))
    return err;
  if (o->num_sni_certs) {
    if (!(x->sni = calloc(o->num_sni_certs, sizeof(*x->sni))))
      return -ENOMEM;
    for (; x->nsni < o->num_sni_certs; x->nsni++) {
      const gev_tls_cert *c = &o->sni_certs[x->nsni];
      if (!(x->sni[x->nsni] =
                new_ssl_ctx(x, o, c->cert_file, c->key_file, &err)))
        return err;
    }
    x->sni_fn = o->sni;
    x->sni_arg = o->sni_arg;
    SSL_CTX_set_tlsext_servername_callback(x->ssl, on_servername);
    SSL_CTX_set_tlsext_servername_arg(x->ssl, x);
  }
  return 0;
}

int gev_tls_ctx_new(gev_tls_ctx **out, const gev_tls_options *o)
{
  gev_tls_ctx *x;
  int err;

  tl_error[0] = '\0';
  if (out)
    *out = NULL;
  if (!out || !o) {
    gev__tls_set_error("NULL argument");
    return -EINVAL;
  }
  if ((err = check_options(o)) < 0)
    return err;
  if (!(x = calloc(1, sizeof(*x))))
    return -ENOMEM;
  if ((err = ctx_init(x, o)) < 0 || (err = build_ssl_ctxs(x, o)) < 0) {
    if (err == -ENOMEM && !tl_error[0])
      gev__tls_set_error("out of memory");
    ctx_free(x);
    return err;
  }
  *out = x;
  return 0;
}

gev_tls_ctx *gev_tls_ctx_ref(gev_tls_ctx *ctx)
{
  if (ctx)
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  return ctx;
}

void gev_tls_ctx_unref(gev_tls_ctx *ctx)
{
  if (ctx &&
      atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1)
    ctx_free(ctx);
}

int gev_tls_ctx_stats(const gev_tls_ctx *ctx, gev_tls_stats *out)
{
  gev_tls_ctx *x = (gev_tls_ctx *)ctx;

  if (!ctx || !out)
    return -EINVAL;
  out->handshakes = atomic_load(&x->n_ok);
  out->failed = atomic_load(&x->n_failed);
  out->timed_out = atomic_load(&x->n_timed_out);
  out->deferred = atomic_load(&x->n_deferred);
  out->resumed = atomic_load(&x->n_resumed);
  return 0;
}
