/*
 * conn.h - one connection, owned by one loop, and the handler that answers
 * it.
 *
 * Lifetime. A gev_conn * is valid from on_connect until on_close returns.
 * To keep it longer (to send from another thread, say), take a reference
 * with gev_conn_ref while it is valid, and drop it with gev_conn_unref.
 * "The caller holds c validly" means: the call runs inside one of c's
 * callbacks, or the caller owns a reference it took that way; a pointer
 * kept without a reference may be freed at any time after on_close.
 *
 * Deferred effects. gev_conn_send, gev_conn_close, gev_conn_shutdown_write,
 * gev_conn_close_lingering, gev_conn_abort and gev_conn_wake never run a
 * callback inside the call: a close they cause, on_close, on_message
 * after a wake, and drain notifications run later in the
 * connection's loop (after the current dispatch pass when called there).
 * So a handler may call them on any connection and keep using it until it
 * returns.
 *
 * After the server. A referenced connection outlives its server's
 * gev_server_free as memory only: every call below on it stays safe and
 * reports the connection closed (gev_conn_send: -ENOTCONN,
 * gev_conn_connected: false) until the last gev_conn_unref, which is
 * allowed from any thread. Calls that name its loop (gev_conn_loop) return
 * a pointer that is dangling by then.
 *
 * The user's context. A context set with gev_conn_set_context is the
 * user's; gev_conn_set_context_free names a function the library calls
 * with it when the last reference goes (after on_close, in the thread that
 * drops that reference), so a context shared with other threads needs no
 * second reference count.
 */
#ifndef GEV_CONN_H
#define GEV_CONN_H

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Which silence an idle timeout measures (gev_conn_set_idle_timeout). */
typedef enum {
  GEV_IDLE_READER = 0, /**< nothing received for that long */
  GEV_IDLE_WRITER,     /**< nothing sent for that long */
  GEV_IDLE_ALL         /**< neither (idle_timeout_ms: today's meaning) */
} gev_idle_kind;

/**
 * Connection callbacks. Every callback of one connection runs in the thread
 * of the worker loop that owns it, in the order on_connect, on_message*,
 * on_close, and on_close runs exactly once. Any member may be NULL.
 */
typedef struct gev_handler {
  /** The connection is open. gev_conn_send and gev_conn_close work here. */
  void (*on_connect)(gev_conn *c);
  /** Consume what you parsed from `in`; append replies to `out`. The
   * library sends `out` when the callback returns: that is how a
   * handler returns its replies. Bytes left in `in` are kept and shown
   * again, after more arrive or when output has drained. `out` refuses
   * writes past max_buffer with -ENOBUFS. Both buffers belong to the
   * library and are valid only during the call. */
  void (*on_message)(gev_conn *c, ringbuffer *in, ringbuffer *out);
  /** The connection is closed (the fd is still open during the call and
   *  closed right after). Sends now fail with -ENOTCONN. */
  void (*on_close)(gev_conn *c);
  /** Optional; set it to keep connections half-open. The peer sent FIN:
   *  it will send nothing more, but may still be reading. Runs once, in
   *  the loop's thread, after on_message saw the input that came before
   *  the FIN, unless the connection is already closing. When set, the
   *  peer's EOF no longer closes the connection: it stays open for
   *  sending (gev_conn_send, replies to held input) until the handler
   *  calls gev_conn_shutdown_write (then it closes once the output has
   *  drained) or gev_conn_close, or an error or idle timeout closes it. A
   *  proxy uses this to pass a client's FIN on to the upstream and still
   *  deliver the upstream's answer. When NULL (the default), the peer's
   *  EOF closes the connection once its output has drained. */
  void (*on_peer_eof)(gev_conn *c);
  /** Optional. The server shuts down (gev_server_shutdown): runs once per
   *  accepted connection, in its loop, also for one that arrives during
   *  the shutdown. The handler finishes what it is doing and ends the
   *  connection (gev_conn_close, or gev_conn_close_lingering after a last
   *  reply); the shutdown's deadline closes it otherwise. When NULL, the
   *  connection is closed as gev_conn_close does as soon as it has no
   *  unsent output, no unconsumed input and no send on its way. */
  void (*on_shutdown)(gev_conn *c);
  /** Optional. One of c's idle timeouts passed (@p kind says which):
   *  when set, it runs instead of the close, and that timeout's period
   *  starts again (so it runs once per period of silence). A handler
   *  that pushes can send a heartbeat on GEV_IDLE_WRITER, and close on
   *  GEV_IDLE_READER. When NULL (the default), the connection closes
   *  (on_close follows, queued output is dropped). */
  void (*on_idle)(gev_conn *c, gev_idle_kind kind);
} gev_handler;

/**
 * Queue @p n bytes from @p p for sending; the bytes are copied. Inside this
 * connection's on_message they are appended to the same `out` buffer,
 * after what the handler appended. Elsewhere in the owning loop's thread
 * (another connection's callback, a timer) they are written at once when
 * nothing is queued ahead of them; what the kernel does not take waits.
 * From another thread they travel in a task and count against max_buffer
 * at once. Any thread.
 * @param c the connection
 * @param p the bytes to send
 * @param n how many bytes (0 is allowed)
 * @return 0; -ENOTCONN once the connection is closing or closed; -ENOBUFS
 *         when the output would exceed max_buffer (nothing is queued);
 *         -EINVAL for NULL c or NULL p with n > 0; -ENOMEM.
 */
GEV_EXPORT int gev_conn_send(gev_conn *c, const void *p, size_t n);

/**
 * Close after flushing what is queued (also what the current on_message
 * appended to `out`, and sends from other threads that were accepted
 * before); on_close follows. Input that arrives meanwhile is discarded.
 * The flush waits as long as the peer does not read: combine with
 * idle_timeout_ms to bound it. Any thread.
 * @param c the connection
 * @return 0; -ENOTCONN when already closing or closed; -EINVAL for NULL.
 */
GEV_EXPORT int gev_conn_close(gev_conn *c);

/**
 * Send FIN after the queued output; the read side stays open and on_close
 * runs when the peer closes. Further sends fail with -ENOTCONN, and what a
 * later on_message appends to `out` is discarded (it could not be sent
 * after the FIN); the replies of the on_message that calls this are still
 * sent. Any thread.
 * @param c the connection
 * @return 0; -ENOTCONN when closing, closed or already shut down; -EINVAL.
 */
GEV_EXPORT int gev_conn_shutdown_write(gev_conn *c);

/**
 * Close gracefully and linger: the queued output is sent, then FIN, and the
 * connection keeps reading, discarding what arrives, until the peer closes
 * too or @p timeout_ms pass (0: 5000); on_close follows either. Use it to
 * end a connection whose peer may still be sending (an error reply to a
 * request whose body is on its way, pipelined requests): closing a socket
 * with bytes still arriving makes the kernel answer them with RST, and
 * the peer then reads an error after, or instead of, the reply just sent.
 * From the call on, on_message and on_peer_eof are not called and sends
 * fail with -ENOTCONN, as after gev_conn_shutdown_write. At the deadline
 * the connection closes at once, whatever is still unsent. Any thread; from
 * another thread it takes effect in the connection's loop shortly after.
 * @param c the connection
 * @param timeout_ms how long to linger at most, in milliseconds; 0 for 5000
 * @return 0; -ENOTCONN when closing, closed or already lingering; -EINVAL
 *         for NULL; -ENOMEM.
 */
GEV_EXPORT int gev_conn_close_lingering(gev_conn *c, uint64_t timeout_ms);

/**
 * Abort: close at once and drop whatever is queued, also what the calling
 * on_message appended to `out` and sends from other threads accepted
 * before. From the call on (from another thread: once the loop has
 * taken the request in, shortly after) nothing more is shown, sent or
 * accepted (gev_conn_send: -ENOTCONN; gev_conn_connected: false). The socket is
 * closed with SO_LINGER set to 0, which makes the kernel reset a TCP
 * connection (the peer reads ECONNRESET, not EOF; bytes in flight are
 * discarded) instead of sending FIN after the pending bytes; a unix-socket
 * peer just sees the socket closed. Use it where gev_conn_close would wait
 * on a peer that does not read (its flush waits as long as the peer
 * does), or for a peer that broke the protocol. As for every close, the
 * close itself (on_close) runs later in the connection's loop: after the
 * current dispatch pass when called there, never inside the call. Any
 * thread.
 * @param c the connection
 * @return 0; -ENOTCONN when closed, aborting already or being detached
 *         (gev_conn_detach); -EINVAL for NULL;
 *         -ENOMEM (from another thread).
 */
GEV_EXPORT int gev_conn_abort(gev_conn *c);

/**
 * Wake @p c: its on_message runs again in its loop, with whatever is in
 * `in` (possibly nothing) and `out` for replies, as if input had arrived.
 * A handler reacts so to state changed elsewhere (a job another thread
 * finished, a queue it fills) without posting a closure per event. Wakes
 * that come before the call they cause has started are merged into one;
 * a wake during on_message causes another call after it. A paused
 * connection (gev_conn_pause_read) is woken once it resumes; a closing
 * one not at all. Never runs on_message inside the call: after the
 * current dispatch pass in the loop's thread, and shortly after from
 * another thread. Any thread, while the caller holds c validly.
 * @param c the connection
 * @return 0; -ENOTCONN once closing or closed; -EINVAL for NULL; -ENOMEM
 *         (from another thread).
 */
GEV_EXPORT int gev_conn_wake(gev_conn *c);

/**
 * Take a reference that keeps @p c's memory valid after on_close. Any
 * thread, while the caller holds c validly (see the head of this file).
 * @param c the connection
 */
GEV_EXPORT void gev_conn_ref(gev_conn *c);

/**
 * Drop a reference taken with gev_conn_ref; the last one frees @p c (and
 * calls the context's free function, if set). Any thread, also after
 * gev_server_free or gev_loop_free.
 * @param c the connection
 */
GEV_EXPORT void gev_conn_unref(gev_conn *c);

/**
 * @param c the connection
 * @return true until the connection starts closing (gev_conn_close,
 *         gev_conn_close_lingering, an error; a half-closed connection still
 *         counts as connected). Any thread.
 */
GEV_EXPORT bool gev_conn_connected(const gev_conn *c);

/**
 * Attach a user pointer (NULL initially). The library never touches it,
 * except to pass it to the function set with gev_conn_set_context_free.
 * Owning loop's thread (or before other threads can see c).
 * @param c the connection
 * @param ctx the user pointer (NULL clears it)
 */
GEV_EXPORT void gev_conn_set_context(gev_conn *c, void *ctx);

/**
 * Have @p free_fn(ctx) called with the context when the last reference to
 * @p c goes: after on_close, in whichever thread drops that reference
 * (the loop's, or one that called gev_conn_unref). NULL (the default)
 * calls nothing. Owning loop's thread.
 * @param c the connection
 * @param free_fn called with the context when the last reference goes;
 *                NULL for none
 */
GEV_EXPORT void gev_conn_set_context_free(gev_conn *c,
                                          void (*free_fn)(void *ctx));

/**
 * Give @p c to another handler (copied; @p h need not outlive the call),
 * from the next callback on: no on_connect is called for it; input left
 * in `in` by the current callback is shown to h's on_message right after
 * the current dispatch pass; on_close goes to h. How an HTTP handler hands
 * an upgraded connection to a WebSocket one. Owning loop's thread, inside
 * one of c's callbacks.
 * @param c the connection
 * @param h the new handler, copied
 * @return 0; -EINVAL for NULL or another thread; -ENOTCONN once closed;
 *         -ENOMEM.
 */
GEV_EXPORT int gev_conn_set_handler(gev_conn *c, const gev_handler *h);

/**
 * @param c the connection
 * @return the user pointer set with gev_conn_set_context.
 */
GEV_EXPORT void *gev_conn_context(const gev_conn *c);

/**
 * @param c the connection
 * @return "ip:port", "[v6]:port" or the unix peer path ("" for an
 *         unnamed unix peer); valid as long as @p c.
 */
GEV_EXPORT const char *gev_conn_peer_addr(const gev_conn *c);

/**
 * @param c the connection
 * @return the local address, formatted like gev_conn_peer_addr ("" when
 *         it cannot be read, e.g. after close before anyone asked); valid
 *         as long as @p c. Any thread.
 */
GEV_EXPORT const char *gev_conn_local_addr(const gev_conn *c);

/**
 * @param c the connection
 * @return the index of the server's listener that accepted @p c (0 for a
 *         server with one address); -1 for an outgoing connection or NULL.
 *         Any thread.
 */
GEV_EXPORT int gev_conn_listener(const gev_conn *c);

/**
 * Turn Nagle's algorithm off (@p on true: TCP_NODELAY, the default for
 * every TCP connection, accepted or outgoing) or back on (small writes
 * wait to be coalesced while an acknowledgement is outstanding). Owning
 * loop's thread (on_connect, say).
 * @param c the connection
 * @param on true for TCP_NODELAY
 * @return 0; -EINVAL for NULL or another thread; -ENOTCONN once closed;
 *         -EOPNOTSUPP for a unix socket; another errno of setsockopt.
 */
GEV_EXPORT int gev_conn_set_nodelay(gev_conn *c, bool on);

/**
 * TCP keepalive on @p c: after @p idle_s seconds without traffic the
 * kernel probes the peer every @p interval_s seconds and resets the
 * connection (on_close follows) after @p count unanswered probes. Owning
 * loop's thread.
 * @param c the connection
 * @param idle_s seconds of silence before the first probe; 0 turns
 *               keepalive off (the other two are then ignored)
 * @param interval_s seconds between probes; 0 keeps the current value
 * @param count unanswered probes before the reset; 0 keeps the current
 *              value
 * @return 0; -EINVAL for NULL, another thread or a negative argument (or
 *         a value the kernel refuses, such as more than 32767 s);
 *         -ENOTCONN once closed; -EOPNOTSUPP for a unix socket; another
 *         errno of setsockopt.
 */
GEV_EXPORT int gev_conn_set_keepalive(gev_conn *c, int idle_s, int interval_s,
                                      int count);

/**
 * @param c the connection
 * @return the socket fd while open, -1 after on_close. Do not close it.
 */
GEV_EXPORT int gev_conn_fd(const gev_conn *c);

/**
 * @param c the connection
 * @return the owning worker loop.
 */
GEV_EXPORT gev_loop *gev_conn_loop(gev_conn *c);

/**
 * @param c the connection
 * @return the server the connection belongs to.
 */
GEV_EXPORT gev_server *gev_conn_server(gev_conn *c);

/**
 * @param c the connection
 * @return bytes received and not consumed yet. Owning loop's thread.
 */
GEV_EXPORT size_t gev_conn_read_buffer_len(const gev_conn *c);

/**
 * @param c the connection
 * @return bytes queued for sending. Owning loop's thread.
 */
GEV_EXPORT size_t gev_conn_write_buffer_len(const gev_conn *c);

/* ---- per-connection limits ---------------------------------------------- */

/**
 * Set or clear one of @p c's idle timeouts, overriding what the server's
 * options (idle_timeout_ms, reader_idle_ms, writer_idle_ms) or the
 * connect options gave it: a connection the handler knows to be special
 * (a long poll, a bulk upload) can wait longer, or less. The period
 * starts at the call. A timeout is checked by a periodic sweep of the
 * loop, every quarter of the shortest timeout set on the loop, so the
 * connection is found idle between 1 and 1.25 times @p ms after its last
 * activity of that kind; then on_idle runs, or it closes. Owning loop's
 * thread (e.g. on_connect).
 * @param c the connection
 * @param kind GEV_IDLE_READER, GEV_IDLE_WRITER or GEV_IDLE_ALL
 * @param ms the timeout in milliseconds; 0 turns it off
 * @return 0; -EINVAL for NULL, an unknown kind, a negative @p ms or
 *         another thread; -ENOTCONN once closed.
 */
GEV_EXPORT int gev_conn_set_idle_timeout(gev_conn *c, gev_idle_kind kind,
                                         int ms);

/**
 * Set @p c's cap on each of its buffers, overriding the server's (or the
 * connect options') max_buffer, with the same meaning: past it `out`
 * refuses writes, gev_conn_send returns -ENOBUFS, reading pauses while
 * the handler holds input back with the output above half of it, and
 * input that reaches it unconsumed
 * closes the connection. Lowering it below what is buffered now drops
 * nothing: what is there stays and drains; only what comes after is
 * refused. Inside on_message it applies to `out` on return. Owning loop's
 * thread.
 * @param c the connection
 * @param max_buffer the cap in bytes; 0 for the default (64 MiB)
 * @return 0; -EINVAL for NULL or another thread; -ENOTCONN once closed.
 */
GEV_EXPORT int gev_conn_set_max_buffer(gev_conn *c, size_t max_buffer);

/* ---- detach and adopt ---------------------------------------------------- */

/** What gev_conn_detach hands back. */
typedef struct gev_detached {
  int fd;          /**< the socket, now the caller's (blocking mode unchanged:
                        still O_NONBLOCK) */
  const void *in;  /**< received, not consumed by the handler; NULL if none */
  size_t in_len;   /**< bytes at @p in */
  const void *out; /**< queued for sending, not yet sent; NULL if none */
  size_t out_len;  /**< bytes at @p out */
} gev_detached;

/**
 * Receives a detached connection's fd and buffers (gev_conn_detach). Runs
 * once in the connection's loop's thread. @p d and the bytes it points at
 * are valid only during the call: copy what you keep (gev_loop_adopt
 * copies them). The fd is the callee's: close it or adopt it.
 * @param c the connection, already closed (gev_conn_connected false,
 *          gev_conn_fd -1); its memory stays valid during the call and
 *          while references to it are held
 * @param d the fd and the bytes that were still buffered
 * @param arg gev_conn_detach's arg
 */
typedef void (*gev_detach_fn)(gev_conn *c, const gev_detached *d, void *arg);

/**
 * Take @p c's socket back from the library (as evio's Detach): after the
 * current dispatch pass, once every send already accepted from other
 * threads has joined the output, the fd leaves the loop without being
 * closed and fn(c, d, arg) gets it, with the input the handler has not
 * consumed and the output not yet sent, in order; nothing is dropped and
 * nothing is sent after that. on_close is not called (on_connect ran, and
 * that was the handler's last callback but those already due in this
 * pass); the connection counts as closed from then on (sends fail with
 * -ENOTCONN, it leaves gev_server_conn_count), and its memory goes with
 * the last reference as usual. What the calling on_message appends to
 * `out` is sent or handed over. If the loop stops before the hand-over,
 * the connection closes as usual (on_close) and fn never runs. A client's
 * connection (gev_client) detached counts as closed for the client,
 * which dials again. Only for plaintext connections: a transport's state
 * (TLS) cannot be handed over. Owning loop's thread.
 * @param c the connection
 * @param fn receives the fd and the buffered bytes; not NULL
 * @param arg passed to @p fn
 * @return 0; -EINVAL for NULL or another thread; -EOPNOTSUPP for a
 *         connection with a transport; -EALREADY when a detach is under
 *         way; -ENOTCONN when closing, closed, half-closed by us
 *         (gev_conn_shutdown_write) or still in its handshake.
 */
GEV_EXPORT int gev_conn_detach(gev_conn *c, gev_detach_fn fn, void *arg);

/** What gev_loop_adopt takes. Zero-initialize and set. */
typedef struct gev_adopt_options {
  int fd; /**< a connected stream socket (TCP or unix); the library's from
               a successful call on */
  const void *in;    /**< shown to on_message first, as if just received
                          (a detached connection's unconsumed input) */
  size_t in_len;     /**< bytes at @p in; copied */
  const void *out;   /**< sent first, before anything the handler sends */
  size_t out_len;    /**< bytes at @p out; copied */
  size_t max_buffer; /**< cap on the connection's buffers; 0 = 64 MiB */
  void *context;     /**< initial gev_conn_context, visible in on_connect */
  /** Told the outcome (as gev_loop_connect's on_result): the connection
   * before its on_connect, or an error (the fd is closed then). May be
   * NULL. */
  void (*on_result)(gev_conn *c, int err, void *arg);
  void *arg;           /**< passed to on_result */
  int idle_timeout_ms; /**< as gev_connect_options' three; all 0: the */
  int reader_idle_ms;  /**< loop's server's, if any */
  int writer_idle_ms;
} gev_adopt_options;

/**
 * Make an already-connected socket a connection on loop @p l (the reverse
 * of gev_conn_detach; also for a socket from socketpair, or one inherited
 * from a parent). It lives on @p l as an outgoing connection does: every
 * gev_conn_* function works on it, its callbacks run in l's thread, it
 * does not count against max_connections, and it is closed (on_close)
 * when the loop stops. The fd is made non-blocking. In the loop, after
 * the call: on_result, then on_connect; then the bytes of opt->out are
 * sent and those of opt->in are shown to on_message, before anything read
 * from the socket. Any thread.
 * @param l the loop
 * @param h the handler, copied
 * @param opt the fd and its bytes (copied), not kept
 * @return 0: the fd is the library's (on_result runs once, unless NULL,
 *         provided the loop runs). Otherwise the fd stays the caller's:
 *         -EINVAL for NULL arguments, NULL bytes with a length, a
 *         negative idle timeout, or a socket that is not a stream;
 *         -EBADF for a closed (or negative) fd; -ENOTSOCK for a file that
 *         is not a socket; -ENOTCONN for a socket that is not connected
 *         (a listening one included); -ESHUTDOWN when l has stopped;
 *         -ENOMEM.
 */
GEV_EXPORT int gev_loop_adopt(gev_loop *l, const gev_handler *h,
                              const gev_adopt_options *opt);

/* ---- flow control, for handlers that stream (proxies, relays) ---------- */

/**
 * Stop reading from @p c: no on_message for new input until
 * gev_conn_resume_read. Output is still written, and a peer reset is still
 * noticed. Any thread (from another thread it takes effect in the loop
 * shortly after).
 * @param c the connection
 * @return 0; -ENOTCONN once closed; -EINVAL for NULL.
 */
GEV_EXPORT int gev_conn_pause_read(gev_conn *c);

/**
 * Read again after gev_conn_pause_read. Input held back meanwhile is shown
 * to on_message again after the current dispatch pass. Any thread.
 * @param c the connection
 * @return 0; -ENOTCONN once closed; -EINVAL for NULL.
 */
GEV_EXPORT int gev_conn_resume_read(gev_conn *c);

/**
 * Ask once to be told when @p c's queued output (including sends from other
 * threads not yet queued) is at most @p low_water bytes: fn(c, arg) runs in
 * the owning loop's thread, never inside the call that set it; right after
 * the current dispatch pass when the output is already that low. One-shot:
 * set it again from fn to keep watching. A later call replaces an earlier
 * one; fn NULL cancels. fn does not run once on_close has run (it may run
 * while a gev_conn_close is still flushing).
 * Typical use: pause reading the connection that feeds @p c while c's output
 * is high, and resume it from fn (backpressure across two connections).
 * Owning loop's thread only.
 * @param c the connection
 * @param low_water the output level, in bytes, to be told about
 * @param fn called once with (c, arg) in the owning loop's thread; NULL cancels
 * @param arg passed to @p fn
 * @return 0; -EINVAL for NULL c or another thread; -ENOTCONN once closed.
 */
GEV_EXPORT int gev_conn_notify_drain(gev_conn *c, size_t low_water,
                                     void (*fn)(gev_conn *c, void *arg),
                                     void *arg);

#ifdef __cplusplus
}
#endif

#endif /* GEV_CONN_H */
