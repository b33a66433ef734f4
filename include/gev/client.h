/*
 * client.h - outgoing connections, on the same loops and with the same
 * handler interface as accepted ones.
 */
#ifndef GEV_CLIENT_H
#define GEV_CLIENT_H

#include <gev/common.h>
#include <gev/loop.h>
#include <gev/server.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The outcome of gev_loop_connect, in the loop's thread. On success @p c is
 * the new connection and @p err is 0; the handler's on_connect runs right
 * after this returns. On failure @p c is NULL and @p err is -ECONNREFUSED,
 * -ETIMEDOUT (the connect timeout), -ECANCELED (the loop stopped first),
 * -ENETUNREACH, -ENOENT (no unix socket there), -ENXIO (the host name does
 * not exist or has no address), -EAGAIN (the name service failed for now,
 * or 64 lookups were running already in the process),
 * -EIO (it failed otherwise), or another negative errno. When a name gave
 * several addresses, the error is the last address's.
 */
typedef void (*gev_connect_fn)(gev_conn *c, int err, void *arg);

/** Options of one outgoing connection. Zero-initialize and set. */
typedef struct gev_connect_options {
  const char
      *address; /**< "127.0.0.1:6379", "[::1]:80", "host:80", "unix:/path" */
  uint64_t timeout_ms; /**< connect timeout; 0 = none but the kernel's */
  size_t max_buffer;   /**< cap on the connection's buffers; 0 = 64 MiB */
  void *context;       /**< initial gev_conn_context, visible in on_connect */
  gev_connect_fn on_result; /**< may be NULL */
  void *arg;                /**< passed to on_result */
  /** How the connection moves its bytes (<gev/transport.h>); NULL:
   * plaintext. transport_arg is passed to its open(). */
  const struct gev_transport *transport;
  void *transport_arg; /**< passed to its open() */
  /** > 0: SO_KEEPALIVE, first probe after this many idle seconds
   * (TCP_KEEPIDLE); TCP only */
  int keepalive_s;
  /** > 0: SO_RCVBUF, set before connecting (TCP's window scale fits it) */
  int rcvbuf;
  int sndbuf; /**< > 0: SO_SNDBUF, set before connecting */
  /** The connection's idle timeouts (as gev_options'; on_idle applies).
   * All three 0: those of the loop's server, if any (as before they
   * existed here); any of them set: these three, 0 meaning off. */
  int idle_timeout_ms;
  int reader_idle_ms; /**< nothing received this long; 0 = off */
  int writer_idle_ms; /**< nothing sent this long; 0 = off */
} gev_connect_options;

/**
 * Open a TCP or unix-socket connection from loop @p l, non-blocking. The
 * connection then lives on @p l like an accepted one: every gev_conn_*
 * function works on it, its callbacks run in l's thread, and it is closed
 * (with on_close) when the loop stops. gev_conn_server gives the server of
 * l, if any; outgoing connections never count against max_connections.
 * Any thread. TCP_NODELAY is on (gev_conn_set_nodelay turns it off);
 * keepalive_s, rcvbuf and sndbuf are set on each socket before it
 * connects, and a failure to set them is that attempt's result.
 *
 * Names. A numeric address is used as it is. A host name is looked up off
 * the loop thread, on a short-lived thread of the library's own (one per
 * lookup, named "gev-resolve", every signal blocked; getaddrinfo, whose
 * /etc/hosts and DNS
 * settings apply), so neither the caller nor the loop ever waits for it.
 * Its addresses are then tried in getaddrinfo's order (RFC 6724: IPv6
 * first where usable), happy-eyeballs style (RFC 8305): the next address
 * is tried at once when one fails (a refused or unreachable IPv6 address
 * falls back to IPv4), or beside it when it has not answered within 250
 * ms; the first to connect wins and the others are dropped. timeout_ms
 * bounds it all, the lookup included. A lookup cannot be interrupted: one given
 * up (timeout, loop stopped) finishes on its thread and is discarded. At most
 * 64 lookups run at once in the process; past that a connect to a name reports
 * -EAGAIN.
 *
 * @param l the loop the connection will live on
 * @param h   copied; need not outlive the call.
 * @param opt copied (the address string is not kept).
 * @return 0 when the attempt started: opt->on_result will run exactly once
 *         (unless NULL), provided the loop runs (a loop freed without ever
 *         running drops the request); an unknown host name is reported
 *         there (-ENXIO), not here. -EINVAL for NULL arguments or a
 *         malformed address (a host name of 256 bytes or more included)
 *         or a negative idle timeout, keepalive_s, rcvbuf or sndbuf;
 *         -ENAMETOOLONG, -ESHUTDOWN when l has stopped, -ENOMEM; then
 *         on_result never runs.
 */
GEV_EXPORT int gev_loop_connect(gev_loop *l, const gev_handler *h,
                                const gev_connect_options *opt);

/* ---- persistent clients: reconnect with backoff ------------------------- */

/** A connection that a loop keeps open: failed connects are retried and a
 *  closed connection is replaced, after a backoff delay. Opaque. */
typedef struct gev_client gev_client;

/** Options of a gev_client. Zero-initialize and set. */
typedef struct gev_client_options {
  /** Every attempt uses these; on_result reports each one (success or
   * failure, so it can log), context is each new connection's initial
   * gev_conn_context. A host name is looked up again for every attempt
   * (as gev_loop_connect does), so a reconnect follows the name to a new
   * address. */
  gev_connect_options connect;
  uint64_t retry_min_ms; /**< delay before the first retry; 0 = 500 ms */
  uint64_t retry_max_ms; /**< the delay doubles up to this; 0 = 30 s */
  /** Each wait is shortened by a random amount of up to this percentage of
   * it (0 to 100; 0 = exact delays), so that many clients dropped at once
   * do not all redial in step. */
  unsigned jitter_pct;
} gev_client_options;

/**
 * Start a client on loop @p l: it connects at once and, from then on, keeps
 * one connection open until gev_client_free. A failed attempt is retried
 * after retry_min_ms, then after twice that, and so on up to retry_max_ms;
 * when an established connection closes (by the peer, an error, the idle
 * timeout or gev_conn_close) a new attempt follows after retry_min_ms,
 * because the delay starts again from the minimum once an attempt succeeds.
 * So a peer that accepts and closes at once is redialled at most every
 * retry_min_ms: never a busy loop. The connections are ordinary outgoing
 * connections (every gev_conn_* function works on them) with @p h as their
 * handler. When the loop stops, the client stops with it: the connection
 * closes, a connect under way reports -ECANCELED, no retry is scheduled.
 * Any thread.
 *
 * @param out receives the client, owned by the caller until gev_client_free;
 *            stored before any of its callbacks can run (they may read it),
 *            NULL on error.
 * @param l the loop the client and its connections live on
 * @param h   copied; need not outlive the call.
 * @param opt copied (the address string is not kept).
 * @return 0; -EINVAL for NULL arguments, a malformed address (an unknown
 *         host name is not malformed: each attempt reports -ENXIO to
 *         on_result and is retried),
 *         a negative socket option or idle timeout in connect,
 *         retry_min_ms > retry_max_ms or jitter_pct > 100; -ENAMETOOLONG;
 *         -ESHUTDOWN when l has stopped; -ENOMEM.
 */
GEV_EXPORT int gev_client_new(gev_client **out, gev_loop *l,
                              const gev_handler *h,
                              const gev_client_options *opt);

/**
 * Stop @p cl and give up the caller's ownership. No attempt starts after
 * this, a pending retry is cancelled, a connect under way is abandoned
 * (on_connect never runs for it) and the open connection, if any, is closed
 * gracefully (gev_conn_close): its on_close is the last callback of the
 * client. Called from the loop's thread, also from inside the client's own
 * callbacks, that takes effect at once; from another thread, callbacks
 * already due may still run until the loop takes the request in, so keep
 * what they use alive until on_close (or until the loop has stopped). The
 * memory is released once the loop is done with it. NULL is ignored.
 * @param cl the client; NULL is ignored
 */
GEV_EXPORT void gev_client_free(gev_client *cl);

/**
 * The client's open connection. Only in the loop's thread.
 * @param cl the client
 * @return the connection, or NULL while it is connecting or waiting to
 *         retry.
 */
GEV_EXPORT gev_conn *gev_client_conn(const gev_client *cl);

/**
 * The loop @p cl runs on. Any thread.
 * @param cl the client
 * @return the loop given to gev_client_new.
 */
GEV_EXPORT gev_loop *gev_client_loop(const gev_client *cl);

#ifdef __cplusplus
}
#endif

#endif /* GEV_CLIENT_H */
