/*
 * server.h - the server: an acceptor loop handing connections to worker
 * loops, or (reuse_port) worker loops with their own SO_REUSEPORT listeners.
 */
#ifndef GEV_SERVER_H
#define GEV_SERVER_H

#include <sys/socket.h> /* struct sockaddr, socklen_t */

#include <gev/common.h>
#include <gev/conn.h> /* gev_handler */
#include <gev/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/** How the acceptor deals connections to worker loops. */
typedef enum {
  GEV_LB_ROUND_ROBIN = 0,  /**< strict rotation */
  GEV_LB_LEAST_CONNECTIONS /**< the loop with the fewest open connections */
} gev_load_balance;

/** One address's own settings: an entry of gev_options.listener_options.
 * Zero-initialize and set what you need. */
typedef struct gev_listener_options {
  /** How this address's connections move their bytes (<gev/transport.h>);
   * NULL: the server's (gev_options.transport, plaintext when that is
   * NULL). gev_transport_plain() serves plaintext on this address of a
   * TLS server; gev_tls_listener_options (<gev/tls.h>) fills in TLS. */
  const struct gev_transport *transport;
  void *transport_arg; /**< passed to its open() */
} gev_listener_options;
/**
 * A custom load balancer (gev_options.pick_loop): the index of the worker
 * loop that gets a new connection. Runs in the acceptor's thread for every
 * accepted connection (not with reuse_port over TCP, where each loop keeps
 * what it accepts), so it must be quick and must not block.
 * @param peer the connection's peer address (valid during the call)
 * @param peer_len its length
 * @param conns conns[i]: the connections open on worker loop i now (a
 *              snapshot; valid during the call)
 * @param num_loops the number of worker loops (the length of conns)
 * @param arg gev_options.pick_loop_arg
 * @return 0 <= i < num_loops; any other value deals this connection by
 *         round-robin instead.
 */
typedef int (*gev_pick_loop_fn)(const struct sockaddr *peer, socklen_t peer_len,
                                const int *conns, int num_loops, void *arg);

/** Server options. Zero-initialize and set what you need. */
typedef struct gev_options {
  /** "127.0.0.1:1833", ":1833", "[::1]:0", "unix:/path", "unix:@name",
   * "fd:3", "fd:NAME" (see gev_server_new); ignored when `addresses` is
   * set */
  const char *address;
  int num_loops;   /**< worker loops; <= 0: number of online CPUs */
  bool reuse_port; /**< each worker loop its own listener */
  gev_load_balance load_balance; /**< how the acceptor deals */
  int idle_timeout_ms; /**< close connections idle this long; 0 = never */
  /** refuse (accept then close) past this; 0 = no limit */
  int max_connections;
  /** per-connection cap on in and out buffers; 0 = 64 MiB */
  size_t max_buffer;
  int backlog;     /**< 0 = SOMAXCONN */
  void *user_data; /**< gev_server_user_data returns it */
  /** How every accepted connection moves its bytes (<gev/transport.h>);
   * NULL: plaintext. transport_arg is passed to its open(). */
  const struct gev_transport *transport;
  void *transport_arg; /**< passed to its open() */
  /** Several addresses, NULL-terminated; when non-NULL it is used instead
   * of `address`. Each entry takes any form `address` takes, mixed:
   * "host:port", "[v6]:port" ("[::]:port" is dual stack: IPv4 too),
   * "unix:/path", "unix:@abstract", "fd:N" or "fd:NAME" (see
   * gev_server_new). Index i is gev_conn_listener's and
   * gev_server_listener_port's i. */
  const char *const *addresses;
  /** > 0: SO_KEEPALIVE on every accepted TCP connection, first probe after
   * this many idle seconds (TCP_KEEPIDLE; interval and count stay the
   * kernel's: gev_conn_set_keepalive sets all three) */
  int keepalive_s;
  /** > 0: SO_RCVBUF of the listeners and every accepted connection (set
   * before listen, so that TCP's window scale fits it) */
  int rcvbuf;
  int sndbuf; /**< > 0: SO_SNDBUF, likewise */
  /** NULL, or one entry per address in the same order: as many as
   * `addresses` has before its NULL (one for `address`); copied. Lets one
   * listener of a server serve TLS and another plaintext. */
  const gev_listener_options *listener_options;
  /** Optional: chooses the worker loop of each accepted connection
   * (gev_pick_loop_fn), instead of load_balance. NULL: load_balance. */
  gev_pick_loop_fn pick_loop;
  void *pick_loop_arg; /**< passed to pick_loop */
  /** Close connections that received nothing this long (sending does
   * not count: a server pushing to its clients still finds a silent
   * one); 0 = never. on_idle, when set, runs instead of the close. */
  int reader_idle_ms;
  /** Close connections that sent nothing this long; 0 = never. */
  int writer_idle_ms;
  /** Optional. Runs once in each worker loop's own thread when the loop
   * starts, before it runs any task, timer or connection: where per-thread
   * state is made (gev_loop_set_data). The acceptor loop does not get it:
   * it runs in the thread that calls gev_server_start, which can do its
   * own setup before the call. */
  void (*on_loop_start)(gev_loop *l);
  /** Optional. Runs once in each worker loop's own thread when it stops,
   * after every connection of the loop got on_close (so their handlers
   * may use the loop's data until then): free the loop's data here. Only
   * for a loop whose on_loop_start ran; timers set here never run. */
  void (*on_loop_stop)(gev_loop *l);
  /** Optional. Runs once, in the acceptor loop's thread, when the server
   * serves: every listener accepts and every worker loop runs (each has
   * made a pass, after its on_loop_start). @p addrs lists the listening
   * addresses as they are bound (":0" shows the port picked; a unix
   * socket as "unix:/path"), one per address in the options' order,
   * NULL-terminated, @p n of them (0 when no memory could be had for
   * them: the server serves all the same); valid during the call. Not called
   * when the server stops or shuts down first. */
  void (*on_serving)(gev_server *s, const char *const *addrs, int n);
} gev_options;

/**
 * Create a server and bind its listener(s). The acceptor loop exists from
 * here on: tasks and timers posted to it run once gev_server_start runs.
 * idle_timeout_ms: bytes received or sent count as activity; the check runs
 * every quarter of the timeout, so a connection closes after between 1 and
 * 1.25 times it (on_close runs, queued output is dropped).
 * reader_idle_ms counts only bytes received, writer_idle_ms only bytes
 * sent; a connection may have all three, and the first to pass acts.
 * on_idle, when the handler has it, runs instead of the close;
 * gev_conn_set_idle_timeout changes them per connection. The server's
 * timeouts apply to outgoing connections on its worker loops too, unless
 * their gev_connect_options set any.
 * ":port" binds 0.0.0.0; use "[::]:port" for IPv6. "unix:/path" removes a
 * stale socket file at /path (one nobody accepts on) before binding, and
 * gev_server_free removes the file again. reuse_port does not apply to
 * unix sockets (the acceptor hands those connections out).
 *
 * Several addresses (opt->addresses): one handler, one set of worker
 * loops; each address has one listener on the acceptor loop, or with
 * reuse_port, for a TCP address, one SO_REUSEPORT listener on each worker
 * loop. Binding is all or nothing: every address is parsed first, and
 * when any one fails to bind, those bound before it are closed (and their
 * unix socket files removed) before the error returns.
 *
 * Inherited sockets: "fd:N" adopts fd N, a socket already listening (a
 * parent passed it, for a restart without dropping connections);
 * "fd:NAME" adopts the socket systemd passed under that name
 * (FileDescriptorName= in the .socket unit; LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES, fds from 3 on; the first fd of that name). The
 * environment is read, never changed. On success the server owns the fd:
 * it is made non-blocking and close-on-exec, and closed by
 * gev_server_free; on failure it is left open and unchanged. Connections
 * from an adopted socket go through the acceptor, also with reuse_port;
 * the backlog is the one it was created with. Setting TCP_NODELAY,
 * keepalive_s, rcvbuf and sndbuf applies to its connections as to any.
 *
 * Every accepted TCP connection has TCP_NODELAY on (gev_conn_set_nodelay
 * turns it off).
 *
 * @param out receives the server, owned by the caller (gev_server_free).
 * @param h   copied; the handler table need not outlive the call.
 * @param opt copied (the address string too); NULL is not accepted.
 * @return 0; -EINVAL for a NULL argument, a malformed address or an
 *         unknown scheme ("tcp://..."), an empty addresses list, a negative
 *         max_connections, idle_timeout_ms, reader_idle_ms, writer_idle_ms,
 *         backlog, keepalive_s, rcvbuf or sndbuf, an "fd:" socket that is
 *         not listening, or one fd named twice; -EADDRINUSE when an address
 *         is taken; -ENAMETOOLONG for a unix path too long; for "fd:":
 *         -EBADF (not an open fd), -ENOTSOCK, -ESOCKTNOSUPPORT (not a
 *         stream socket), -EAFNOSUPPORT (not IPv4, IPv6 or unix), -ENOENT
 *         (NAME not among systemd's sockets for this process); -ENOMEM; or
 *         the errno of
 *         socket/bind/listen/epoll_create/eventfd.
 */
GEV_EXPORT int gev_server_new(gev_server **out, const gev_handler *h,
                              const gev_options *opt);

/**
 * Start the worker threads and run the acceptor loop in the calling thread
 * until gev_server_stop. Returns only after every connection got on_close
 * and every worker thread has been joined.
 * @param s the server
 * @return 0; -EALREADY when the server was started before; -EINVAL for
 *         NULL; or the errno of pthread_create (nothing is left running).
 */
GEV_EXPORT int gev_server_start(gev_server *s);

/**
 * Ask the server to stop. Async-signal-safe (an atomic store and an eventfd
 * write): callable from any thread and from a signal handler, also before
 * gev_server_start (which then returns at once) and after it returned.
 * @param s the server
 */
GEV_EXPORT void gev_server_stop(gev_server *s);

/**
 * Shut down gracefully: the listeners close at once (new connections are
 * refused); every open connection gets on_shutdown(c) once, in its loop,
 * if the handler has one; without it, a connection is closed as
 * gev_conn_close does as soon as it has no unsent output, no unconsumed
 * input and no send on its way. Nothing a handler appended to `out` or
 * gev_conn_send accepted is lost unless the deadline passes: connections
 * still open @p timeout_ms after the call are closed at once (their
 * output dropped). gev_server_start returns, as after gev_server_stop, as
 * soon as the last connection has closed, at the latest at the deadline.
 * Outgoing connections on the server's loops are not waited for: they
 * close when the loops stop. gev_server_stop during a shutdown stops at
 * once. Async-signal-safe (an atomic exchange and an eventfd write): any
 * thread, also a signal handler; before gev_server_start it takes effect
 * when the server starts.
 * @param s the server
 * @param timeout_ms how long connections may take to finish, in milliseconds
 * @return 0; -EINVAL for NULL; -EALREADY when a shutdown is under way (or
 *         was).
 */
GEV_EXPORT int gev_server_shutdown(gev_server *s, uint64_t timeout_ms);

/**
 * Release everything: listeners, loops, queued tasks (freed unrun) and
 * timers. Call it after gev_server_start has returned, or instead of it.
 * NULL is accepted.
 * @param s the server; NULL is accepted
 */
GEV_EXPORT void gev_server_free(gev_server *s);

/**
 * @param s the server
 * @return the bound TCP port (useful with port 0) of the first address,
 *         or 0 when it is a unix socket.
 */
GEV_EXPORT int gev_server_port(const gev_server *s);

/**
 * The number of the server's addresses: 1 with `address`, the length of
 * `addresses` otherwise (with reuse_port there may be more sockets than
 * that; they count as one). Any thread.
 * @param s the server
 * @return the number of addresses; 0 for NULL.
 */
GEV_EXPORT int gev_server_num_listeners(const gev_server *s);

/**
 * The TCP port address @p i is bound to (the kernel's choice for port 0,
 * the inherited socket's for "fd:"). Any thread.
 * @param s the server
 * @param i the address's index, 0 <= i < gev_server_num_listeners
 * @return the port; 0 for a unix socket; -EINVAL for NULL s or i out of
 *         range.
 */
GEV_EXPORT int gev_server_listener_port(const gev_server *s, int i);

/**
 * The listening socket of address @p i, to hand on to a new process (a
 * restart that drops no connection): the child gets it as fd N (dup2,
 * which also clears close-on-exec on the copy) and serves "fd:N"; both
 * accept from the one queue until the old server shuts down. The server
 * keeps the fd and closes its own copy as usual; from this call on,
 * gev_server_free no longer removes the address's unix socket file (the
 * new process serves that path now). The number is valid until the
 * listener closes (gev_server_shutdown, the end of gev_server_start).
 * Any thread.
 * @param s the server
 * @param i the address's index, 0 <= i < gev_server_num_listeners
 * @return the fd; -EINVAL for NULL s or i out of range; -EOPNOTSUPP for a
 *         TCP address with reuse_port (one socket per loop: the new
 *         process binds its own SO_REUSEPORT listeners instead).
 */
GEV_EXPORT int gev_server_listener_fd(gev_server *s, int i);

/**
 * @param s the server
 * @return the user_data given in the options.
 */
GEV_EXPORT void *gev_server_user_data(const gev_server *s);

/**
 * @param s the server
 * @return the acceptor loop, valid until gev_server_free.
 */
GEV_EXPORT gev_loop *gev_server_loop(gev_server *s);

/**
 * @param s the server
 * @return the number of worker loops.
 */
GEV_EXPORT int gev_server_num_loops(const gev_server *s);

/**
 * @param s the server
 * @param i the worker index, 0 <= i < gev_server_num_loops
 * @return worker loop @p i (0 <= i < gev_server_num_loops), valid until
 *         gev_server_free; NULL when i is out of range.
 */
GEV_EXPORT gev_loop *gev_server_worker_loop(gev_server *s, int i);

/**
 * @param s the server
 * @return the number of accepted connections not yet closed: those past
 *         on_connect whose on_close has not started, plus those accepted
 *         and on their way to a worker loop (the same count max_connections
 *         applies to). A connection leaves the count just before its
 *         on_close runs, so on_close (and anything that happens after it)
 *         never sees it counted. Outgoing connections are not counted. Any
 *         thread; a snapshot.
 */
GEV_EXPORT int gev_server_conn_count(const gev_server *s);

/**
 * gev_loop_run_after on the acceptor loop.
 * @param s the server
 * @param delay_ms the delay in milliseconds
 * @param fn the callback; it runs in the acceptor loop's thread
 * @param arg passed to @p fn
 * @return the timer id, or 0 on failure (fn never runs).
 */
GEV_EXPORT gev_timer_id gev_server_run_after(gev_server *s, uint64_t delay_ms,
                                             gev_task_fn fn, void *arg);
/**
 * gev_loop_run_every on the acceptor loop.
 * @param s the server
 * @param interval_ms the period in milliseconds
 * @param fn the callback; it runs in the acceptor loop's thread
 * @param arg passed to @p fn
 * @return the timer id, or 0 on failure (fn never runs).
 */
GEV_EXPORT gev_timer_id gev_server_run_every(gev_server *s,
                                             uint64_t interval_ms,
                                             gev_task_fn fn, void *arg);
/**
 * gev_loop_tick on the acceptor loop: a server timer whose callback
 * returns the delay until its next run (0 stops it).
 * @param s the server
 * @param delay_ms the delay before the first run, in milliseconds
 * @param fn the callback; it runs in the acceptor loop's thread
 * @param arg passed to @p fn
 * @return as gev_loop_tick; -EINVAL for NULL.
 */
GEV_EXPORT int gev_server_tick(gev_server *s, uint64_t delay_ms, gev_tick_fn fn,
                               void *arg);

/**
 * gev_loop_cancel on the acceptor loop.
 * @param s the server
 * @param id a timer id returned by gev_server_run_after or
 *           gev_server_run_every
 * @return 0; -ENOENT when the id is unknown, already fired or cancelled;
 *         -EINVAL when s is NULL.
 */
GEV_EXPORT int gev_server_cancel(gev_server *s, gev_timer_id id);

#ifdef __cplusplus
}
#endif

#endif /* GEV_SERVER_H */
