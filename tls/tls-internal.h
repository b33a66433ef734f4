/* tls-internal.h - what the files of libgev-tls share: the context, the
 * per-connection state, the socket BIO and the handshake pacing.
 *
 * Ownership. A gev_tls_ctx is reference counted (tls-ctx.c); each
 * connection's state holds one reference from open() to close(). A
 * tls_bind ties outgoing connections to a server name; binds live in
 * their context's list until the context goes. The per-connection state
 * (tls_conn) is created by open() and freed by close(), both in the
 * connection's loop thread, which is the only thread that touches it. */
#ifndef GEV_TLS_INTERNAL_H
#define GEV_TLS_INTERNAL_H

#include <gev/tls.h>

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

/* The largest plaintext of one TLS record. */
#define TLS_RECORD_MAX 16384

/* What a connection is verified against: a context and, for outgoing
 * connections, a server name. */
typedef struct tls_bind {
  struct gev_tls_ctx *ctx;
  const char *name;      /* NULL: none (server, or verify the peer's IP) */
  bool is_ip;            /* name is an IP literal: no SNI */
  struct tls_bind *next; /* the context's list, under its mutex */
  SSL_SESSION *session;  /* last ticket, for resumption; under the mutex */
} tls_bind;

struct gev_tls_ctx {
  tls_bind self; /* first: a context is also its own bind (transport_arg) */
  atomic_int refs;
  SSL_CTX *ssl;  /* the default certificate, and every setting */
  SSL_CTX **sni; /* one per extra certificate, the same settings */
  size_t nsni;
  gev_tls_sni_fn sni_fn;
  void *sni_arg;
  BIO_METHOD *bio;     /* the socket BIO (tls-bio.c) */
  unsigned char *alpn; /* wire format: length-prefixed names */
  size_t alpn_len;
  char *alpn_names; /* the same names, each NUL-terminated, then "" */
  gev_tls_verify verify;
  bool has_cert;
  int timeout_ms;     /* handshake timeout; <= 0 none */
  int per_pass;       /* handshake steps per loop pass; <= 0 no limit */
  pthread_mutex_t mu; /* binds and their sessions */
  atomic_uint_fast64_t n_ok, n_failed, n_timed_out, n_deferred, n_resumed;
};

/* One connection's TLS state. */
typedef struct tls_conn {
  SSL *ssl;
  gev_conn *c;
  gev_loop *loop;
  tls_bind *bind;
  gev_timer_id timer; /* the handshake timeout, 0 when none is armed */
  int fd;
  int err; /* errno of the BIO's last failed system call */
  /* The BIO's view of the incoming record stream (tls-bio.c): read()
   * lets a record in only when its plaintext will fit in `in`, so no
   * decrypted byte ever waits inside OpenSSL where no readiness event
   * would announce it. */
  size_t budget;    /* bytes a record body may have; SIZE_MAX: any */
  size_t body_left; /* of the current record, once admitted */
  unsigned char hdr[5];
  unsigned char hdr_have;
  bool admitted; /* the current record's body may come in */
  bool refused;  /* the BIO held a record back for lack of room */
  size_t wpend;  /* an SSL_write to retry needs at least this much */
  bool server, done, fatal, timed_out, want_write;
} tls_conn;

/* tls-bio.c */
BIO_METHOD *gev__tls_bio_method(void);
BIO *gev__tls_bio_new(BIO_METHOD *m, tls_conn *t);
/* The record stream starts over at a boundary (the handshake's end). */
void gev__tls_bio_reset(tls_conn *t);
/* True when no record is partly read. */
bool gev__tls_bio_at_boundary(const tls_conn *t);

/* tls-pace.c: true when one more server handshake step may run in this
 * loop pass (counted); false: defer it to the next pass. */
bool gev__tls_pace_take(gev_loop *l, int per_pass);

/* tls-ctx.c */
void gev__tls_set_error(const char *what);
/* Keeps the new session of an outgoing connection (SSL_CTX's callback). */
int gev__tls_new_session(SSL *ssl, SSL_SESSION *sess);
/* The session to offer for bind @p b (a reference), or NULL. */
SSL_SESSION *gev__tls_bind_session(tls_bind *b);

/* tls-conn.c: the state of @p c when it is TLS, else NULL. */
tls_conn *gev__tls_state(const gev_conn *c);

#endif
