/*
 * tls.h - TLS for gev connections: libgev-tls, an add-on library over the
 * transport seam (<gev/transport.h>), built on OpenSSL 3.
 *
 * The core library links libc only; this one (pkg-config gev-tls) links
 * libgev, libssl and libcrypto. For the handler nothing changes: on_connect
 * runs once the handshake has completed, on_message sees plaintext in `in`
 * and writes plaintext to `out`, gev_conn_send / close / shutdown_write /
 * close_lingering keep their meaning from any thread, backpressure and
 * max_buffer apply to the plaintext, and a close sends close_notify. A
 * handshake that fails or times out closes that one connection without
 * calling the handler; gev_tls_ctx_stats counts it.
 *
 * A server:
 *
 *     gev_tls_options to = {.cert_file = "cert.pem", .key_file = "key.pem"};
 *     gev_tls_ctx *tls;
 *     gev_tls_ctx_new(&tls, &to);
 *     gev_options opt = {.address = "0.0.0.0:443"};
 *     gev_tls_server_options(&opt, tls);
 *     gev_server_new(&s, &h, &opt);  ...  gev_server_free(s);
 *     gev_tls_ctx_unref(tls);
 *
 * A client: gev_tls_connect_options(&connect_options, tls, NULL) after
 * setting connect_options.address; the certificate is verified against
 * ca_file (or the system store) and the host name of the address.
 */
#ifndef GEV_TLS_H
#define GEV_TLS_H

#include <gev/client.h>
#include <gev/common.h>
#include <gev/server.h>
#include <gev/transport.h>
#include <gev/ws.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A TLS configuration: certificates, verification, ALPN, versions.
 *  Created once, shared by any number of connections in any threads.
 *  Reference counted; opaque. */
typedef struct gev_tls_ctx gev_tls_ctx;

/** How the peer's certificate is checked. GEV_TLS_VERIFY_DEFAULT (0) is
 *  PEER for outgoing connections and NONE for accepted ones. */
typedef enum gev_tls_verify {
  GEV_TLS_VERIFY_DEFAULT = 0,
  GEV_TLS_VERIFY_NONE, /**< no check (a server asks no certificate) */
  GEV_TLS_VERIFY_PEER, /**< a certificate the peer sends must verify; a
                            client always needs one from the server, a
                            server asks for one but accepts none */
  GEV_TLS_VERIFY_REQUIRE_CLIENT_CERT /**< server: no verified client
                                          certificate, no connection */
} gev_tls_verify;

/** TLS 1.2, for min_version / max_version. */
#define GEV_TLS_1_2 0x0303
/** TLS 1.3, for min_version / max_version. */
#define GEV_TLS_1_3 0x0304

/** One certificate with its key (PEM files). */
typedef struct gev_tls_cert {
  const char *cert_file; /* the leaf first, then its intermediates */
  const char *key_file;  /* the private key; NULL: in cert_file */
} gev_tls_cert;

/** Server-side SNI: pick the certificate for @p server_name (the name the
 *  client asked for, never NULL). Runs in a worker loop's thread, during a
 *  handshake; must be thread-safe and must not block.
 *  @return an index into gev_tls_options.sni_certs; -1 for the default
 *          certificate; any other negative value refuses the handshake
 *          (an unrecognized_name alert). */
typedef int (*gev_tls_sni_fn)(const char *server_name, void *arg);

/** Options of gev_tls_ctx_new. Zero-initialize and set what you need;
 *  every zero field has the default given beside it. */
typedef struct gev_tls_options {
  /* The certificate presented (a server needs one; a client presents it
   * when a server asks). key_file NULL: the key is in cert_file. */
  const char *cert_file;
  const char *key_file;
  /* Server-side SNI: more certificates, picked by the name the client
   * asks for. Without `sni`, the first whose own names (subjectAltName
   * DNS entries, wildcards included, or else the CN) match is used, the
   * default certificate otherwise. */
  const gev_tls_cert *sni_certs;
  size_t num_sni_certs;
  gev_tls_sni_fn sni; /* may be NULL */
  void *sni_arg;
  /* Trust anchors for verifying peers (PEM file, hashed directory); both
   * NULL: the system's default store. A server with a verify mode other
   * than NONE also names ca_file's certificates to clients as acceptable
   * issuers. */
  const char *ca_file;
  const char *ca_dir;
  gev_tls_verify verify;
  /* ALPN protocols in order of preference, NULL-terminated ("h2",
   * "http/1.1", NULL); NULL: no ALPN. A server picks its most preferred
   * one the client offers, and none (the handshake goes on without ALPN)
   * when there is no overlap. */
  const char *const *alpn;
  int min_version; /* GEV_TLS_1_2 (0) or GEV_TLS_1_3 */
  int max_version; /* 0: the highest OpenSSL has (1.3, which is preferred) */
  /* Session tickets (resumption without a server-side cache) are on;
   * this turns them off. */
  bool disable_tickets;
  /* A handshake not complete after this closes the connection unseen
   * (an outgoing one reports -ETIMEDOUT). 0: 10000; < 0: no limit. */
  int handshake_timeout_ms;
  /* Accepted connections' handshake steps per loop pass, so that a flood
   * of new connections cannot starve established ones; the rest wait
   * for the next pass. 0: 16; < 0: no limit. */
  int handshakes_per_pass;
  /* Outgoing connections attached with transport_arg = ctx directly (not
   * through gev_tls_connect_options): the name sent as SNI and verified
   * against the server's certificate. NULL: the peer's IP address is
   * verified instead. */
  const char *server_name;
  /* OpenSSL cipher strings for TLS 1.2 and 1.3; NULL: OpenSSL's defaults. */
  const char *ciphers;
  const char *ciphersuites;
} gev_tls_options;

/**
 * Create a TLS context: loads and checks the certificates and keys, the
 * trust anchors, and every option. Any thread.
 * @param out receives the context with one reference, the caller's
 *            (gev_tls_ctx_unref); NULL on error.
 * @param o   copied (strings too); need not outlive the call.
 * @return 0; -EINVAL for NULL arguments, a bad option, an unreadable or
 *         malformed certificate or key, or a key that does not match its
 *         certificate; -ENOMEM. gev_tls_error() then says what in words.
 */
GEV_EXPORT int gev_tls_ctx_new(gev_tls_ctx **out, const gev_tls_options *o);

/** Take a reference to @p ctx. Any thread.
 *  @param ctx a context (NULL is passed through).
 *  @return ctx (NULL for NULL). */
GEV_EXPORT gev_tls_ctx *gev_tls_ctx_ref(gev_tls_ctx *ctx);

/**
 * Drop a reference. Every connection holds one from the start of its
 * handshake until it closes, so the memory stays while any is open. But a
 * server or connect options that name @p ctx take no reference: drop the
 * caller's last one only after gev_server_free (or the last
 * gev_loop_connect / gev_client_free using it). Any thread; NULL ignored.
 * @param ctx the context; the last reference frees it.
 */
GEV_EXPORT void gev_tls_ctx_unref(gev_tls_ctx *ctx);

/** The text of the last error gev_tls_ctx_new or gev_tls_connect_options
 *  met in the calling thread.
 *  @return the text ("" when none), valid until the thread's next call
 *          into libgev-tls. */
GEV_EXPORT const char *gev_tls_error(void);

/** The TLS transport table (for gev_options.transport and
 *  gev_connect_options.transport, with a gev_tls_ctx * as transport_arg).
 *  Any thread.
 *  @return the table, static: valid for the life of the process. */
GEV_EXPORT const gev_transport *gev_tls_transport(void);

/**
 * Make every connection of a server TLS: sets @p o->transport and
 * o->transport_arg. Call before gev_server_new. Any thread.
 * @param o   the server's options, changed in place.
 * @param ctx the context; it must outlive the server (no reference taken).
 * @return 0; -EINVAL for NULL, or a context without a certificate.
 */
GEV_EXPORT int gev_tls_server_options(gev_options *o, gev_tls_ctx *ctx);

/**
 * Make the connections of one address of a server TLS (an entry of
 * gev_options.listener_options): sets @p o->transport and
 * o->transport_arg, so that a server can serve TLS on one port and
 * plaintext (or another certificate) on another. Call before
 * gev_server_new. Any thread.
 * @param o   the address's entry, changed in place.
 * @param ctx the context; it must outlive the server (no reference taken).
 * @return 0; -EINVAL for NULL, or a context without a certificate.
 */
GEV_EXPORT int gev_tls_listener_options(gev_listener_options *o,
                                        gev_tls_ctx *ctx);

/**
 * Make an outgoing connection TLS: sets @p o->transport and
 * o->transport_arg. @p server_name is sent as SNI and verified against the
 * server's certificate; NULL takes the host of o->address (set it first):
 * a DNS name is used as above, an IP address literal is verified against
 * the certificate's IP entries and sent as no SNI. The name is kept inside
 * @p ctx (once per distinct name), so o may be used for any number of
 * connections, and for a gev_client, while ctx lives. Sessions are
 * resumed per name (the last ticket the server sent). Any thread.
 * @param o           the connect options, changed in place.
 * @param ctx         the context; it must outlive the connections.
 * @param server_name the name to ask for and verify, or NULL.
 * @return 0; -EINVAL for NULL o or ctx, no name and no address, or a unix
 *         address without a name; -ENOMEM.
 */
GEV_EXPORT int gev_tls_connect_options(gev_connect_options *o, gev_tls_ctx *ctx,
                                       const char *server_name);

/**
 * Make a WebSocket client (gev_ws_connect) TLS, for a wss:// URL: sets
 * @p wo->transport and wo->transport_arg as gev_tls_connect_options does,
 * with the host of @p url ("wss://host[:port]/path") as the server name:
 * a DNS name is sent as SNI and verified against the server's
 * certificate, an IP literal is verified against its IP entries. The
 * name is kept inside @p ctx, so @p wo serves any number of connections
 * to that host while ctx lives. Any thread.
 * @param wo  the WebSocket options, changed in place.
 * @param ctx the context; it must outlive the connections.
 * @param url the URL to be passed to gev_ws_connect.
 * @return 0; -EINVAL for NULL, or a URL with no host or not wss:// (or
 *         ws://); -ENOMEM.
 */
GEV_EXPORT int gev_tls_ws_options(gev_ws_options *wo, gev_tls_ctx *ctx,
                                  const char *url);

/* ---- one connection: what the handshake settled ------------------------
 * Owning loop's thread (e.g. in on_connect), from on_connect until
 * on_close returns. Strings stay valid as long as the connection.
 * Connections that are not TLS answer NULL, false or a negative errno. */

/** @param c a connection. @return true when @p c moves its bytes through
 *  TLS. */
GEV_EXPORT bool gev_tls_is_tls(const gev_conn *c);

/** @param c a connection. @return the ALPN protocol agreed on ("h2"),
 *  NULL when none. */
GEV_EXPORT const char *gev_tls_alpn(const gev_conn *c);

/** @param c a connection. @return the protocol version ("TLSv1.3",
 *  "TLSv1.2"). */
GEV_EXPORT const char *gev_tls_version(const gev_conn *c);

/** @param c a connection. @return the cipher suite
 *  ("TLS_AES_256_GCM_SHA384"). */
GEV_EXPORT const char *gev_tls_cipher(const gev_conn *c);

/** @param c a connection. @return the SNI name: the one the client asked
 *  for (accepted connections) or sent (outgoing); NULL when none. */
GEV_EXPORT const char *gev_tls_server_name(const gev_conn *c);

/**
 * The peer certificate's subject, one line ("CN=client,O=gev", RFC 2253
 * order), into @p buf (always NUL-terminated when @p len > 0).
 * @param c   a connection.
 * @param buf receives the subject.
 * @param len the size of buf.
 * @return its length (truncated to len - 1 when longer); -ENOENT when the
 *         peer sent no certificate; -EINVAL when c is not TLS or buf NULL.
 */
GEV_EXPORT int gev_tls_peer_subject(const gev_conn *c, char *buf, size_t len);

/** @param c a connection.
 *  @return OpenSSL's verification result for the peer's certificate
 *  (X509_V_OK, 0, when it verified or was not checked; otherwise an
 *  X509_V_ERR_* code); -1 when c is not TLS. */
GEV_EXPORT long gev_tls_verify_result(const gev_conn *c);

/** @param c a connection. @return true when the handshake resumed an
 *  earlier session. */
GEV_EXPORT bool gev_tls_session_reused(const gev_conn *c);

struct ssl_st;
/** @param c a connection.
 *  @return the connection's OpenSSL object (SSL *), for what this header
 *  does not offer; do not read, write or free through it. NULL if not TLS. */
GEV_EXPORT struct ssl_st *gev_tls_ssl(const gev_conn *c);

/* ---- counters ----------------------------------------------------------- */

/** Counts of one context since its creation. Zero-initialize; more fields
 *  may follow. */
typedef struct gev_tls_stats {
  uint64_t handshakes; /* completed */
  uint64_t failed;     /* failed, timed out included: closed unseen */
  uint64_t timed_out;  /* of those, by handshake_timeout_ms */
  uint64_t deferred;   /* steps put off to the next loop pass */
  uint64_t resumed;    /* completed by resuming a session */
} gev_tls_stats;

/** A snapshot of @p ctx's counters. Any thread.
 *  @param ctx the context.
 *  @param out receives the counters.
 *  @return 0; -EINVAL for NULL. */
GEV_EXPORT int gev_tls_ctx_stats(const gev_tls_ctx *ctx, gev_tls_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* GEV_TLS_H */
