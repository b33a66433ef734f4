/*
 * udp.h - datagram sockets on gev loops: UDP over IPv4 and IPv6, and unix
 * datagram sockets, read and written in batches (recvmmsg, sendmmsg).
 *
 * A gev_udp is one socket owned by one loop. Every datagram that arrives
 * is handed to on_datagram in the loop's thread; a wake-up reads up to
 * `batch` datagrams with one recvmmsg into buffers the loop owns (no
 * allocation per datagram), and the replies sent during those callbacks
 * leave together with one sendmmsg once the batch has been handled.
 * Those buffers are GEV_UDP_BATCH_MAX slots of GEV_UDP_MAX_DATAGRAM bytes
 * (4 MiB of address space) and a 256 KiB send area per loop that has a
 * UDP socket, kept until the loop ends; only the pages datagrams have
 * filled become resident (a burst of 64 KiB datagrams can make it a few
 * MiB; small ones, the first page of each slot used).
 *
 * Sending. gev_udp_send_to copies the datagram and returns at once, from
 * any thread. The kernel's EAGAIN never reaches the caller: a datagram the
 * kernel cannot take now waits in the socket's send queue, which is bounded
 * (send_queue_max bytes); past the bound the call fails with -ENOBUFS and
 * the datagram is not sent. A datagram accepted (0) is handed to the
 * kernel unless the socket closes first; the kernel or the network may
 * still drop it, as UDP does. Errors the kernel reports for a datagram it
 * refused (-EMSGSIZE, -ECONNREFUSED, -EACCES without broadcast, ...) come
 * to on_error, after the call. On an unconnected unix socket the kernel
 * pushes back per peer (a peer's queue is full: it is not reading); the
 * datagrams to it wait, retried every 1 to 64 ms, while those to other
 * peers go on; each peer's arrive in the order they were sent.
 *
 * Lifetime. gev_udp_new gives the caller one reference; gev_udp_free
 * closes the socket (if it is open) and drops it, and must be called once
 * for every socket. gev_udp_close closes without dropping it, so other
 * threads may keep calling gev_udp_send_to on the pointer (they get
 * -ENOTCONN) until gev_udp_free. on_close runs once, in the loop's thread,
 * after the close, never inside a gev_udp_* call; a socket whose loop
 * never ran it gets no callback at all. When its loop finishes (the server
 * stops, gev_loop_run returns) the socket is closed with it: on_close
 * runs, and the pointer stays valid for gev_udp_free.
 *
 * Server mode. gev_udp_server_new puts one SO_REUSEPORT socket on every
 * worker loop of a gev_server, so one set of loops serves TCP and UDP and
 * the kernel spreads senders over the loops (by their address and port).
 * A graceful shutdown (gev_server_shutdown) stops the sockets' reading and
 * closes each once its send queue is empty: the queue keeps going out as
 * the kernel takes it, and the shutdown waits for that as it waits for
 * open connections, until its deadline (then the rest is dropped and
 * counted in gev_udp_stats.dropped).
 */
#ifndef GEV_UDP_H
#define GEV_UDP_H

#include <gev/common.h>
#include <gev/loop.h>

#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A datagram socket owned by one loop. */
typedef struct gev_udp gev_udp;
/** One SO_REUSEPORT datagram socket per worker loop of a server. */
typedef struct gev_udp_server gev_udp_server;

/** Most datagrams one recvmmsg or sendmmsg moves (gev_udp_options.batch). */
#define GEV_UDP_BATCH_MAX 64
/** The largest datagram delivered whole; a larger one (unix sockets) is
 *  delivered cut to this size with `truncated` set. */
#define GEV_UDP_MAX_DATAGRAM 65536

/** One received datagram. Everything it points to belongs to the loop and
 *  is valid only during on_datagram. */
typedef struct gev_udp_datagram {
  const void *data; /**< the payload (not NUL-terminated) */
  size_t len;       /**< its length; 0 for an empty datagram */
  /** The datagram was longer than GEV_UDP_MAX_DATAGRAM: data holds its
   *  first GEV_UDP_MAX_DATAGRAM bytes, the rest is lost. */
  bool truncated;
  /** The sender's address (give it to gev_udp_send_to to reply); peer_len
   *  is 0 for an unnamed unix socket, which cannot be answered. */
  const struct sockaddr *peer;
  socklen_t peer_len;
  /** With gev_udp_options.pktinfo: the address the datagram was sent to
   *  (the destination IP, with the socket's port), which tells a socket
   *  bound to a wildcard address which of the host's addresses was asked.
   *  A datagram sent to a broadcast address shows the address of the
   *  interface it came in on; one sent to a multicast group shows the
   *  group (gev_udp_reply then leaves from the kernel's choice).
   *  NULL (local_len 0) without the option or for unix sockets. */
  const struct sockaddr *local;
  socklen_t local_len;
} gev_udp_datagram;

/** Socket callbacks; each runs in the owning loop's thread. Any member may
 *  be NULL. */
typedef struct gev_udp_handler {
  /** A datagram arrived. gev_udp_send_to here queues the reply into the
   *  batch that leaves after this wake-up's datagrams are handled. */
  void (*on_datagram)(gev_udp *u, const gev_udp_datagram *d);
  /** The kernel reported an error for this socket, as a negative errno:
   *  on a connected socket, an ICMP error for an earlier datagram
   *  (-ECONNREFUSED: nothing listens on the peer's port; -EHOSTUNREACH,
   *  ...), or a datagram the kernel refused to send (-EMSGSIZE, -EACCES,
   *  -ENETUNREACH, ...). The socket stays open; each error is reported
   *  once and consumed, never spun on. Several refused sends in one pass
   *  are reported once, with the first error. One exception: when the
   *  loop can no longer watch the socket (epoll_ctl failed, e.g.
   *  -ENOMEM), that error comes here and the socket closes right after
   *  (on_close): a socket that cannot read would lose every datagram
   *  silently. */
  void (*on_error)(gev_udp *u, int err);
  /** The socket closed; sends now fail with -ENOTCONN. Runs once. */
  void (*on_close)(gev_udp *u);
} gev_udp_handler;

/** Socket options. Zero-initialize and set what you need. */
typedef struct gev_udp_options {
  /** Where to bind: "127.0.0.1:5353", ":5353" (0.0.0.0), "[::]:0",
   *  "[::1]:0", "unix:/path" or "unix:@abstract". NULL: an IPv4 socket
   *  bound to an ephemeral port (a client). "[::]" is dual stack on
   *  every host (as for stream listeners): IPv4 peers and local
   *  addresses appear as IPv4-mapped IPv6 addresses, and replies to them
   *  go out as IPv4. */
  const char *address;
  /** Optional: the socket's peer from the start (gev_udp_connect). */
  const char *connect;
  bool reuse_port; /**< SO_REUSEPORT: several sockets share the address */
  bool broadcast;  /**< SO_BROADCAST: may send to broadcast addresses */
  /** IP_PKTINFO / IPV6_RECVPKTINFO: fill gev_udp_datagram.local (and
   *  let gev_udp_reply answer from it). Ignored on unix sockets, which
   *  read no control data at all: file descriptors a peer attaches
   *  (SCM_RIGHTS) are closed by the kernel, never installed here. */
  bool pktinfo;
  int batch;  /**< datagrams per recvmmsg; 0 = 32; 1..GEV_UDP_BATCH_MAX */
  int rcvbuf; /**< > 0: SO_RCVBUF */
  int sndbuf; /**< > 0: SO_SNDBUF */
  int tos;    /**< > 0: IP_TOS (IPv4) or IPV6_TCLASS (IPv6) */
  /** Bound on the bytes waiting to be sent (the kernel pushed back, or
   *  sends from other threads not yet taken by the loop); 0 = 4 MiB. One
   *  outgoing batch the kernel refuses at once (at most 256 KiB) may take
   *  the queue past it; sends then fail with -ENOBUFS until it drains. */
  size_t send_queue_max;
  void *user_data; /**< gev_udp_user_data returns it */
} gev_udp_options;

/**
 * Open a datagram socket on loop @p l. The socket is created, configured
 * and bound in the calling thread, and the memory its loop reads into is
 * taken here, so a bad address, a port in use or no memory fails here (a
 * socket that failed in its loop after binding would lose what peers had
 * already sent to it); it starts reading once @p l runs the start task (at once
 * when called from @p l's thread, after the current pass). Any thread; @p l may
 * be a server's loop or a standalone one.
 * @param out receives the socket; the caller owns one reference
 *            (gev_udp_free). Set before any callback can run.
 * @param l the owning loop
 * @param h copied; need not outlive the call
 * @param opt copied; the strings need not outlive the call
 * @return 0; -EINVAL (NULL argument, bad batch, malformed address, an
 *         address and a peer of different families); -EADDRINUSE;
 *         -ENAMETOOLONG (unix path); -ESHUTDOWN when @p l has stopped;
 *         -ENOMEM; the errno of socket, setsockopt, bind or connect.
 *         On error no callback ever runs.
 */
GEV_EXPORT int gev_udp_new(gev_udp **out, gev_loop *l, const gev_udp_handler *h,
                           const gev_udp_options *opt);

/**
 * Queue one datagram to @p to (copied). Any thread. From the loop's own
 * thread it joins the loop's outgoing batch (sent after the current
 * callbacks with one sendmmsg); from another thread it is queued and the
 * loop woken, once per batch of such sends.
 * @param u the socket (the caller holds a reference)
 * @param to the destination; NULL on a connected socket sends to its peer
 * @param to_len its length
 * @param p the payload; may be NULL when @p n is 0
 * @param n its length, at most GEV_UDP_MAX_DATAGRAM (the kernel's own
 *          limit applies too: 65,507 bytes over IPv4)
 * @return 0 (accepted); -ENOTCONN once closed (gev_udp_close) or once
 *         its loop has stopped (the loop closes it); -ENOBUFS
 *         when the send queue is at send_queue_max; -EMSGSIZE past
 *         GEV_UDP_MAX_DATAGRAM; -EDESTADDRREQ for NULL @p to on an
 *         unconnected socket; -EINVAL (NULL @p u, a bad address length,
 *         NULL @p p with @p n > 0); -ENOMEM.
 */
GEV_EXPORT int gev_udp_send_to(gev_udp *u, const struct sockaddr *to,
                               socklen_t to_len, const void *p, size_t n);

/**
 * Reply to datagram @p d: gev_udp_send_to its sender (d->peer), leaving
 * from the local address it was sent to (d->local) rather than the one the
 * kernel would pick. A socket bound to a wildcard address ("0.0.0.0",
 * "[::]") on a host with several addresses thus answers from the address
 * the client asked, which a client that checks where replies come from
 * (a connected socket, DNS) needs. d->local is there with
 * gev_udp_options.pktinfo; without it (or on a unix socket) this is
 * gev_udp_send_to(u, d->peer, d->peer_len, p, n). The source address goes
 * to the kernel as IP_PKTINFO / IPV6_PKTINFO control data, also when the
 * datagram waits in the send queue. Any thread, while @p d and what it
 * points to are valid (in on_datagram: until it returns; the address is
 * copied at the call).
 * @param u the socket that received @p d
 * @param d the datagram answered
 * @param p the payload; may be NULL when @p n is 0
 * @param n its length
 * @return as gev_udp_send_to; -EDESTADDRREQ when @p d has no sender
 *         (an unnamed unix socket); -EINVAL when d->local is not of the
 *         socket's family. The kernel refuses a source address that is
 *         not the host's (on_error: -EINVAL or -EADDRNOTAVAIL).
 */
GEV_EXPORT int gev_udp_reply(gev_udp *u, const gev_udp_datagram *d,
                             const void *p, size_t n);

/**
 * gev_udp_send_to on a connected socket, to its peer.
 * @param u the socket
 * @param p the payload
 * @param n its length
 * @return as gev_udp_send_to; -EDESTADDRREQ when not connected.
 */
GEV_EXPORT int gev_udp_send(gev_udp *u, const void *p, size_t n);

/**
 * Connect the socket: datagrams then go to @p address by default
 * (gev_udp_send), only datagrams from it arrive, and ICMP errors about it
 * come to on_error. Any thread (the address is resolved in the caller's).
 * @param u the socket
 * @param address "host:port", "[v6]:port" or "unix:/path"
 * @return 0; -EINVAL (malformed, or another family than the socket's);
 *         -ENOTCONN once closed; the errno of connect(2).
 */
GEV_EXPORT int gev_udp_connect(gev_udp *u, const char *address);

/**
 * Close the socket: reading stops, the send queue is handed to the kernel
 * as far as it takes it without waiting (the rest is dropped), and
 * on_close runs in the loop's thread. Sends fail with -ENOTCONN from the
 * return on. Any thread; idempotent. The reference stays the caller's.
 * @param u the socket
 * @return 0; -EINVAL for NULL; -EALREADY when it was closed before
 *         (also by its loop: it ended, or was freed before it ran).
 */
GEV_EXPORT int gev_udp_close(gev_udp *u);

/**
 * gev_udp_close if the socket is open, then drop the caller's reference:
 * @p u must not be used after the call. Any thread, also inside the
 * socket's own callbacks (it stays valid until they return). NULL is
 * accepted.
 * @param u the socket
 */
GEV_EXPORT void gev_udp_free(gev_udp *u);

/**
 * Join (or, with @p join false, leave) a multicast group. Any thread.
 * @param u the socket (IPv4 or IPv6)
 * @param group "239.1.2.3" or "ff02::1:3"
 * @param iface IPv4: the local address of the interface ("127.0.0.1");
 *              IPv6: an interface name ("lo"); NULL: the kernel's choice
 * @param join true to join, false to leave
 * @return 0; -EINVAL (malformed, or the socket's other family);
 *         -ENOTCONN once closed; -ENODEV (no such interface); the errno
 *         of setsockopt.
 */
GEV_EXPORT int gev_udp_multicast(gev_udp *u, const char *group,
                                 const char *iface, bool join);

/**
 * Multicast sending: the TTL (hop limit) of outgoing multicast datagrams,
 * whether they loop back to this host's own members, and the interface
 * they leave by. Any thread.
 * @param u the socket (IPv4 or IPv6)
 * @param ttl 0..255 (the kernel's default is 1: this network only)
 * @param loop deliver them to members on this host too
 * @param iface IPv4: the interface's local address; IPv6: its name;
 *              NULL: leave the choice unchanged
 * @return 0; -EINVAL (ttl out of range, malformed iface, a unix socket);
 *         -ENOTCONN once closed; -ENODEV; the errno of setsockopt.
 */
GEV_EXPORT int gev_udp_multicast_options(gev_udp *u, int ttl, bool loop,
                                         const char *iface);

/**
 * Allow or forbid sending to broadcast addresses (SO_BROADCAST). Any
 * thread.
 * @param u the socket
 * @param on true to allow
 * @return 0; -EINVAL for NULL; -ENOTCONN once closed; setsockopt's errno.
 */
GEV_EXPORT int gev_udp_set_broadcast(gev_udp *u, bool on);

/**
 * @param u the socket
 * @return the port it is bound to (useful with port 0); 0 for unix
 *         sockets, NULL or a closed socket.
 */
GEV_EXPORT int gev_udp_port(const gev_udp *u);

/**
 * @param u the socket
 * @return its fd (for setsockopt calls of your own), or -1 once closed.
 *         The fd belongs to the socket: do not close it or read from it.
 */
GEV_EXPORT int gev_udp_fd(const gev_udp *u);

/**
 * @param u the socket
 * @return the owning loop.
 */
GEV_EXPORT gev_loop *gev_udp_loop(const gev_udp *u);

/**
 * @param u the socket
 * @return the user_data of its options.
 */
GEV_EXPORT void *gev_udp_user_data(const gev_udp *u);

/** A socket's counters (gev_udp_stats). Callers zero-initialize; more
 *  fields may follow. */
typedef struct gev_udp_stats {
  uint64_t datagrams_in, bytes_in;   /**< received */
  uint64_t datagrams_out, bytes_out; /**< taken by the kernel */
  uint64_t truncated;                /**< received cut short */
  uint64_t recv_calls;               /**< recvmmsg calls */
  uint64_t send_calls;               /**< sendmmsg calls */
  uint64_t send_errors;              /**< datagrams the kernel refused */
  uint64_t queued;  /**< datagrams that waited in the send queue */
  uint64_t errors;  /**< errors reported to on_error */
  uint64_t dropped; /**< accepted but never sent: the socket closed */
} gev_udp_stats;

/**
 * A snapshot of the socket's counters. Any thread while the caller holds
 * @p u; each counter is read on its own (they are not one instant).
 * @param u the socket
 * @param out filled
 * @return 0; -EINVAL for NULL.
 */
GEV_EXPORT int gev_udp_get_stats(const gev_udp *u, gev_udp_stats *out);

/* ---- server mode ------------------------------------------------------- */

/**
 * Serve @p opt->address on every worker loop of @p s: one socket per loop,
 * all bound with SO_REUSEPORT to the same address (port 0: the first
 * socket picks the port, the others take the same one), so datagrams are
 * spread over the loops by the kernel. A unix address gets one socket, on
 * worker loop 0. Call it before or after gev_server_start; the sockets
 * read once their loops run. They close when the server stops; on a
 * graceful shutdown they stop reading and close once their queues are
 * empty (the shutdown waits for that, up to its deadline). Any thread.
 * @param out receives the group, owned by the caller
 *            (gev_udp_server_free, after or instead of the server's end)
 * @param s the server whose worker loops serve the address
 * @param h the datagram handler, copied
 * @param opt the sockets' options (reuse_port is implied)
 * @return 0; as gev_udp_new (nothing is left open on error).
 */
GEV_EXPORT int gev_udp_server_new(gev_udp_server **out, gev_server *s,
                                  const gev_udp_handler *h,
                                  const gev_udp_options *opt);

/**
 * @param us the group
 * @return the port its sockets are bound to; 0 for a unix address.
 */
GEV_EXPORT int gev_udp_server_port(const gev_udp_server *us);

/**
 * @param us the group
 * @return the number of sockets (worker loops served).
 */
GEV_EXPORT int gev_udp_server_num_sockets(const gev_udp_server *us);

/**
 * @param us the group
 * @param i 0 <= i < gev_udp_server_num_sockets
 * @return socket @p i (the one of worker loop @p i), owned by the group;
 *         NULL when out of range.
 */
GEV_EXPORT gev_udp *gev_udp_server_socket(gev_udp_server *us, int i);

/**
 * Close every socket of the group and free it. Any thread, also after
 * gev_server_free. NULL is accepted.
 * @param us the group
 */
GEV_EXPORT void gev_udp_server_free(gev_udp_server *us);

#ifdef __cplusplus
}
#endif

#endif /* GEV_UDP_H */
