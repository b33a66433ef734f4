/*
 * ws.h - WebSocket (RFC 6455) over gev connections: servers, the upgrade
 * of an HTTP connection, clients.
 *
 * A gev_ws is one WebSocket connection on top of one gev_conn. Its handler
 * sees whole messages: fragments are reassembled (control frames may come
 * between them), text is checked to be UTF-8 as it arrives, pings are
 * answered by the library, and the close handshake is done for you. No
 * extension is negotiated (no permessage-deflate: it needs zlib, and
 * libgev depends on libc only).
 *
 * Lifetime. A gev_ws * is valid from on_open until on_close returns, like
 * the gev_conn under it (gev_ws_conn), and gev_ws_ref / gev_ws_unref keep
 * it longer exactly as gev_conn_ref / gev_conn_unref do (they are the same
 * reference count). Every callback of one gev_ws runs in its connection's
 * loop thread.
 *
 * Sending. gev_ws_send and gev_ws_close work from any thread with the rules
 * of gev_conn_send: the bytes are copied, a frame is queued whole or not at
 * all, -ENOBUFS past the connection's max_buffer, -ENOTCONN once the close
 * handshake has started (a Close frame was sent) or the connection closed.
 *
 * Backpressure. While the connection's output is above half of max_buffer
 * and the handler answered the last message it was given (queued output
 * from its on_message), the library delivers no further message: the
 * frames wait in the input, which stops reading at its cap, as for a plain
 * connection. A handler that only consumes (a client pushing a stream with
 * gev_ws_send while it reads what comes back) keeps being given messages,
 * so that two peers streaming at each other cannot wait for each other.
 *
 * After a Close. Data frames that follow the peer's Close frame are not
 * delivered (RFC 6455 5.5.1: the peer sends nothing after it); the ones
 * that arrive after our own Close but before the peer's still are (the
 * peer may have sent them before it saw ours).
 *
 * Failing the connection. A protocol error by the peer (a bad frame header,
 * a payload length not in its shortest form included) sends a Close frame
 * with the code of RFC 6455 7.4.1 (1002 protocol error, 1007 invalid
 * UTF-8, 1009 message too big) and closes the TCP connection after it;
 * on_close then reports that code.
 */
#ifndef GEV_WS_H
#define GEV_WS_H

#include <gev/common.h>
#include <gev/conn.h>
#include <gev/loop.h>
#include <gev/server.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One WebSocket connection. Opaque. */
typedef struct gev_ws gev_ws;

/** Frame opcodes (RFC 6455 5.2), as passed to on_message and gev_ws_send. */
enum {
  GEV_WS_TEXT = 1,   /**< a UTF-8 text message */
  GEV_WS_BINARY = 2, /**< a binary message */
  GEV_WS_CLOSE = 8,  /**< (not passed to on_message: on_close says it) */
  GEV_WS_PING = 9,   /**< a ping (answered by the library) */
  GEV_WS_PONG = 10   /**< a pong */
};

/** Close status codes (RFC 6455 7.4.1) the library itself uses. */
enum {
  GEV_WS_CLOSE_NORMAL = 1000,
  GEV_WS_CLOSE_GOING_AWAY = 1001,
  GEV_WS_CLOSE_PROTOCOL_ERROR = 1002,
  GEV_WS_CLOSE_NO_STATUS = 1005, /**< the peer's Close had no code */
  GEV_WS_CLOSE_ABNORMAL = 1006,  /**< the TCP connection ended first */
  GEV_WS_CLOSE_INVALID_DATA = 1007,
  GEV_WS_CLOSE_TOO_BIG = 1009,
  GEV_WS_CLOSE_INTERNAL = 1011
};

/** WebSocket callbacks. Any member may be NULL. */
typedef struct gev_ws_handler {
  /** The handshake is done; sending works from here on. */
  void (*on_open)(gev_ws *ws);
  /** One whole message: GEV_WS_TEXT (valid UTF-8) or GEV_WS_BINARY; with
   * gev_ws_options.control_messages also GEV_WS_PING and GEV_WS_PONG
   * (a ping is answered whether or not the handler sees it). @p data is
   * the library's, valid during the call only. */
  void (*on_message)(gev_ws *ws, int opcode, const void *data, size_t len);
  /** The connection is gone (the gev_conn's on_close). @p code: the code
   * of the peer's Close frame, GEV_WS_CLOSE_NO_STATUS when it had none;
   * when no Close came, the code of the Close the library sent because
   * the peer broke the protocol (1002, 1007, 1009), or
   * GEV_WS_CLOSE_ABNORMAL when the TCP connection ended without one (also
   * after the close timeout or a missing pong). @p reason:
   * the Close frame's reason (UTF-8, NUL-terminated, "" when none). */
  void (*on_close)(gev_ws *ws, int code, const char *reason);
  /** The server shuts down (gev_server_shutdown). NULL: the library sends
   * Close 1001 ("going away") and the connection ends when the peer
   * answers, bounded by the shutdown's deadline. */
  void (*on_shutdown)(gev_ws *ws);
  /** Clients only: the connection or its handshake failed, so no on_open
   * and no on_close will follow. @p err is the connect error of
   * gev_loop_connect (-ECONNREFUSED, -ETIMEDOUT, ...), -EPROTO when the
   * server refused the upgrade or answered it wrongly (a bad
   * Sec-WebSocket-Accept, say), -ECONNRESET when it closed during the
   * handshake, -ETIMEDOUT when its answer did not come within
   * connect_timeout_ms. @p ctx is the context given to gev_ws_connect. */
  void (*on_fail)(void *ctx, int err);
} gev_ws_handler;

/** WebSocket options. Zero-initialize and set what you need; a zero field
 * takes the default named. */
typedef struct gev_ws_options {
  /** Largest message (after reassembly) accepted; a frame that would
   * pass it fails the connection with 1009 before any of it is buffered.
   * 0: 16 MiB. */
  size_t max_message;
  /** How long to wait for the peer's Close after sending one, then for
   * its TCP close. 0: 5000 ms. */
  uint64_t close_timeout_ms;
  /** Send a ping this often; 0: never. */
  uint64_t ping_interval_ms;
  /** With ping_interval_ms: close the connection (code 1006) when no pong
   * came this long after a ping. 0: ping_interval_ms. */
  uint64_t pong_timeout_ms;
  /** Show pings and pongs to on_message too. */
  bool control_messages;
  /** Servers: pick the subprotocol from the client's Sec-WebSocket-
   * Protocol list (@p offered, @p n entries, NUL-terminated), in the
   * loop's thread during the handshake. Return one of the offered
   * strings, or NULL for none (no header is sent). NULL: none. */
  const char *(*select_protocol)(const char *const *offered, size_t n,
                                 void *arg);
  /** Servers: accept the handshake's Origin header (NULL when the request
   * had none: non-browser clients). false answers 403. NULL: accept all. */
  bool (*check_origin)(const char *origin, void *arg);
  /** Clients: the Sec-WebSocket-Protocol list offered ("chat, v2"); NULL
   * offers none. */
  const char *protocols;
  /** Clients: the Origin header sent; NULL sends none. */
  const char *origin;
  /** Clients: connect and handshake timeout; 0: 10000 ms. */
  uint64_t connect_timeout_ms;
  /** Passed to select_protocol and check_origin; gev_ws_arg returns it. */
  void *arg;
  /** Clients: how the connection moves its bytes (as
   * gev_connect_options.transport); a wss:// URL needs one: with
   * libgev-tls, gev_tls_ws_options sets both fields so that the URL's
   * host is sent as SNI and verified against the server's certificate.
   * NULL: plaintext. Servers take theirs from gev_options (for TLS,
   * gev_tls_server_options). */
  const struct gev_transport *transport;
  void *transport_arg; /**< passed to its open() */
} gev_ws_options;

/**
 * Create a server whose every connection is a WebSocket: the library reads
 * and answers each opening handshake (RFC 6455 4.2: a GET of HTTP/1.1 or
 * later with Host, "Upgrade: websocket", a "Connection" that lists
 * "upgrade", a 16-byte Sec-WebSocket-Key and Sec-WebSocket-Version 13; 400
 * otherwise, 426 with "Sec-WebSocket-Version: 13" for another version or
 * no Upgrade, 403 when check_origin refuses), then runs @p h. Handshakes
 * are bounded by 8 KiB and by the close timeout. Start, stop, shut down and
 * free it as any gev_server, but free it with gev_ws_server_free.
 * @p opt->user_data is not available through gev_server_user_data (which
 * returns the library's state); use @p wo->arg and gev_ws_arg instead.
 * @param out receives the server
 * @param h the WebSocket handler, copied
 * @param wo the WebSocket options, copied (NULL: defaults); the strings
 *           and the arg are not copied and must outlive the server
 * @param opt the server's options, as for gev_server_new
 * @return 0; -EINVAL for NULL; -ENOMEM; the errors of gev_server_new.
 */
GEV_EXPORT int gev_ws_server_new(gev_server **out, const gev_ws_handler *h,
                                 const gev_ws_options *wo,
                                 const gev_options *opt);

/**
 * gev_server_free for a server made by gev_ws_server_new, and the
 * library's state with it. NULL is ignored.
 * @param s the server
 */
GEV_EXPORT void gev_ws_server_free(gev_server *s);

/**
 * Upgrade the HTTP connection @p c to a WebSocket, from inside its
 * handler's on_message, once that handler's parser has seen a whole
 * request head at the front of @p in and decided it is a WebSocket
 * request (its path, say). The request head is read from @p in again
 * (any parser may have routed it; the library validates the handshake
 * itself, as gev_ws_server_new describes) and consumed; the answer (101,
 * or 400/403/426) is appended to @p out. On success the connection's
 * handler becomes the WebSocket one (gev_conn_set_handler), bytes that
 * followed the request in @p in are its first frames, and on_open runs
 * before this returns. The connection's context is taken over by the
 * library: clear yours (and its free function) before calling; use
 * gev_ws_set_context instead.
 * @param c the connection, in its loop's thread, inside its on_message
 * @param in the on_message input, starting with the request head
 * @param out the on_message output
 * @param h the WebSocket handler, copied
 * @param wo the options, copied (NULL: defaults); strings and arg must
 *           outlive the connection
 * @param ctx the initial gev_ws_context, visible in on_open
 * @return 0 when upgraded; -EAGAIN when @p in does not hold a whole head
 *         yet (nothing consumed); -EPROTO when the handshake is invalid:
 *         the error response was queued and the connection is closing
 *         after it; -EINVAL for NULL or another thread; -ENOMEM (the
 *         connection is closed).
 */
GEV_EXPORT int gev_ws_upgrade(gev_conn *c, ringbuffer *in, ringbuffer *out,
                              const gev_ws_handler *h, const gev_ws_options *wo,
                              void *ctx);

/**
 * Open a WebSocket client connection to @p url ("ws://host:port/path";
 * port 80 when absent, 443 for "wss://host/path", which needs
 * @p wo->transport; the host may be a name, an IPv4 address or
 * "[v6]") on loop @p l (gev_loop_connect). The handshake sends a random
 * 16-byte key and checks the server's Sec-WebSocket-Accept; then on_open
 * runs. Every frame the client sends is masked with a fresh random key.
 * A failure before on_open is reported by on_fail. Any thread.
 * @param l the loop the connection lives on
 * @param url the server's URL
 * @param h the handler, copied
 * @param wo the options, copied (NULL: defaults); strings and arg must
 *           outlive the connection
 * @param ctx the initial gev_ws_context, also passed to on_fail
 * @return 0 when the attempt started (on_open or on_fail follows, as long
 *         as the loop runs); -EINVAL for NULL or a malformed URL;
 *         -EPROTONOSUPPORT for a scheme other than ws:// and wss://, or
 *         wss:// without @p wo->transport (the core library has no TLS:
 *         see gev_tls_ws_options); -ENOMEM; the errors of
 *         gev_loop_connect. On error no callback runs.
 */
GEV_EXPORT int gev_ws_connect(gev_loop *l, const char *url,
                              const gev_ws_handler *h, const gev_ws_options *wo,
                              void *ctx);

/**
 * Send one message (unfragmented) or a ping or pong. Any thread, with the
 * rules of gev_conn_send (see the head of this file).
 * @param ws the connection
 * @param opcode GEV_WS_TEXT, GEV_WS_BINARY, GEV_WS_PING or GEV_WS_PONG
 * @param p the payload; text must be UTF-8
 * @param n its length; at most 125 for a ping or pong
 * @return 0; -EINVAL for NULL, another opcode, text that is not UTF-8 or a
 *         long control payload; -ENOTCONN after a Close was sent or the
 *         connection closed; -ENOBUFS past max_buffer; -ENOMEM.
 */
GEV_EXPORT int gev_ws_send(gev_ws *ws, int opcode, const void *p, size_t n);

/**
 * Start the close handshake: send a Close frame and, once the peer's Close
 * came (or close_timeout_ms passed), close the connection; on_close
 * follows. A client, after a complete handshake (either side started
 * it), leaves the TCP close to the server (RFC 6455 7.1.1) and closes
 * itself only if the server has not within close_timeout_ms of our Close.
 * Messages that arrive meanwhile are still delivered. Any thread.
 * @param ws the connection
 * @param code a status code (1000 normal; 0 sends a Close without one)
 * @param reason UTF-8, at most 123 bytes; NULL for none
 * @return 0; -EINVAL for NULL, a code a peer may not send (1005, 1006,
 *         below 1000, ...) or a bad reason; -ENOTCONN when closing already;
 *         -ENOBUFS; -ENOMEM.
 */
GEV_EXPORT int gev_ws_close(gev_ws *ws, int code, const char *reason);

/**
 * @param ws the connection
 * @return the gev_conn under @p ws (for its addresses, loop, flow
 *         control). Sending raw bytes on it breaks the framing.
 */
GEV_EXPORT gev_conn *gev_ws_conn(gev_ws *ws);

/**
 * Attach a user pointer (the one given to gev_ws_upgrade or gev_ws_connect
 * initially, NULL on a gev_ws_server_new server). Owning loop's thread.
 * @param ws the connection
 * @param ctx the pointer
 */
GEV_EXPORT void gev_ws_set_context(gev_ws *ws, void *ctx);

/**
 * @param ws the connection
 * @return the user pointer. Any thread.
 */
GEV_EXPORT void *gev_ws_context(const gev_ws *ws);

/**
 * @param ws the connection
 * @return gev_ws_options.arg of the connection.
 */
GEV_EXPORT void *gev_ws_arg(const gev_ws *ws);

/**
 * @param ws the connection
 * @return the request target of the handshake ("/chat?room=1"); for a
 *         client, the one it requested. Valid as long as @p ws.
 */
GEV_EXPORT const char *gev_ws_path(const gev_ws *ws);

/**
 * @param ws the connection
 * @return the subprotocol agreed on, "" for none. Valid as long as @p ws.
 */
GEV_EXPORT const char *gev_ws_protocol(const gev_ws *ws);

/**
 * Keep @p ws (and its gev_conn) valid after on_close; gev_conn_ref on
 * gev_ws_conn(ws). Any thread, while the caller holds it validly.
 * @param ws the connection
 */
GEV_EXPORT void gev_ws_ref(gev_ws *ws);

/**
 * Drop a reference taken with gev_ws_ref; the last one frees it. Any
 * thread.
 * @param ws the connection
 */
GEV_EXPORT void gev_ws_unref(gev_ws *ws);

#ifdef __cplusplus
}
#endif

#endif /* GEV_WS_H */
