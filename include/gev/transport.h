/*
 * transport.h - how a connection moves bytes: the seam under TLS.
 *
 * A connection reads, writes, shuts down and closes through a small table of
 * operations. The default is plaintext (the socket itself); an add-on such
 * as TLS supplies its own table in gev_options.transport or
 * gev_connect_options.transport, and the handler above sees plain bytes
 * either way.
 *
 * Every operation runs in the connection's loop thread. `state` is what
 * open() stored (NULL without open). Results:
 *   > 0                       bytes moved;
 *   0                         read: the peer's orderly end of stream;
 *                             write/send: nothing could be taken now;
 *   -EAGAIN                   would block in the operation's own direction
 *                             (read: wait for readable; write: writable);
 *   GEV_TRANSPORT_WANT_WRITE  read (or shutdown) cannot go on until the
 *                             socket is writable (a TLS handshake or key
 *                             update that must send first);
 *   GEV_TRANSPORT_WANT_READ   write (or shutdown) cannot go on until the
 *                             socket is readable;
 *   -ENOBUFS                  read: the input buffer is at its cap;
 *   other negative errno      the connection is broken: it closes.
 * A transport must never raise SIGPIPE (use MSG_NOSIGNAL).
 */
#ifndef GEV_TRANSPORT_H
#define GEV_TRANSPORT_H

#include <sys/types.h>

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A write (or shutdown) needs the socket readable first. Outside the
 *  errno range, so it never collides with a real error. */
#define GEV_TRANSPORT_WANT_READ (-5001)
/** A read (or shutdown) needs the socket writable first (a TLS handshake
 *  or key update that must send). Outside the errno range. */
#define GEV_TRANSPORT_WANT_WRITE (-5002)

/** The operations of a transport. Every member but open and close must be
 *  set. The table must outlive every connection that uses it. */
typedef struct gev_transport {
  /** Optional. A connection starts using the transport, before on_connect
   *  (accepted) or before the connect result is reported (outgoing).
   *  @p arg is the one given with the table. Store per-connection state in
   *  *state. 0, or a negative errno: the connection is then closed without
   *  on_connect (an outgoing one reports the error as its result). */
  int (*open)(gev_conn *c, void *arg, void **state);
  /** Read what is available into @p in (ringbuffer_read_fd for sockets);
   *  never more than ringbuffer_limit(in) allows. */
  ssize_t (*read)(void *state, int fd, ringbuffer *in);
  /** Write from @p out and consume what was written (ringbuffer_write_fd). */
  ssize_t (*write)(void *state, int fd, ringbuffer *out);
  /** Write @p n bytes from @p p, nothing queued before them: the bytes
   *  taken (possibly fewer than n, possibly 0). */
  ssize_t (*send)(void *state, int fd, const void *p, size_t n);
  /** End the sending direction after everything written so far (FIN, or a
   *  TLS close_notify and FIN). 0 when done, or a result as above. */
  int (*shutdown)(void *state, int fd);
  /** Optional. The connection is closing: release @p state. The library
   *  closes the fd right after. Called once, also when open failed. */
  void (*close)(void *state);
  /** Optional. A handshake that must complete before the handler sees the
   *  connection (TLS). Called right after open and then whenever the
   *  socket is ready in the direction it asked for: 0 when complete (then
   *  on_connect runs, or an outgoing connection reports its result),
   *  -EAGAIN or GEV_TRANSPORT_WANT_READ to wait for readability,
   *  GEV_TRANSPORT_WANT_WRITE for writability, another negative errno when
   *  it failed: the connection closes without on_connect or on_close, and
   *  an outgoing one reports that error as its result. gev_conn_close
   *  ends a handshake from any thread (a timeout, say). Bytes the peer sent
   *  after the handshake may already be inside the transport: the library
   *  reads once right after completion, whatever the socket says. */
  int (*handshake)(void *state, int fd);
} gev_transport;

/**
 * @param c the connection
 * @return the transport @p c uses (gev_transport_plain() by default);
 *         NULL for NULL. Any thread.
 */
GEV_EXPORT const gev_transport *gev_conn_transport(const gev_conn *c);

/**
 * @param c the connection
 * @return the state the transport's open() stored for @p c (NULL for the
 *         plaintext transport), for a transport's own accessors (the TLS
 *         version of a connection, say). Owning loop's thread; valid until
 *         on_close returns (or, for a connection closed in its handshake,
 *         until the transport's close()).
 */
GEV_EXPORT void *gev_conn_transport_state(const gev_conn *c);

/** The plaintext transport every connection uses by default: the socket's
 *  own read, sendmsg and shutdown. Useful to wrap (a test transport, a
 *  byte counter) by calling its members from your own.
 *  @return the table, static and valid for the life of the process. */
GEV_EXPORT const gev_transport *gev_transport_plain(void);

#ifdef __cplusplus
}
#endif

#endif /* GEV_TRANSPORT_H */
