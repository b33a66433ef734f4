/* peer.h - what the peer echo servers (bench/peers/NAME-echo.c) share: the
 * command line, the SO_REUSEPORT listeners, one thread per loop, and a clean
 * stop on SIGINT/SIGTERM. Only the library-specific part is in each peer.
 *
 *   NAME-echo [-p PORT] [-l LOOPS] [-a HOST]
 *
 * -p 0 (the default) picks a free port; every loop gets its own listener on
 * that port (SO_REUSEPORT), so the kernel spreads connections over loops.
 * Prints "listening on HOST:PORT" once every listener listens. SIGINT and
 * SIGTERM stop every loop; the exit status is then 0. */
#ifndef GEV_BENCH_PEER_H
#define GEV_BENCH_PEER_H

/* Per-connection buffer of the peers that manage their own (epoll, libev,
 * libuv): small, like a competent user's first choice. */
#define PEER_BUF_SIZE 16384

typedef struct peer_ops {
  /* Main thread, before any loop runs: set up loop `index` that accepts on
   * the listening, non-blocking `listen_fd` (now owned by the loop).
   * Returns the loop, or NULL on failure. */
  void *(*create)(int index, int listen_fd);
  /* The loop's own thread: run until stopped. */
  void (*run)(void *loop);
  /* Main thread, while run() runs: make run() return soon. */
  void (*stop)(void *loop);
  /* Main thread, after run() returned: release the loop. */
  void (*destroy)(void *loop);
} peer_ops;

/* Parses argv, listens, runs the loops until SIGINT/SIGTERM. Returns the
 * exit status. */
int peer_main(int argc, char **argv, const peer_ops *ops);

/* Sets TCP_NODELAY on an accepted socket, as gev does. */
void peer_nodelay(int fd);

/* Adds 1 to an eventfd, retrying on EINTR: the stop() of peers whose loop
 * watches an eventfd to learn that it should return (async-signal-safe). */
void peer_wake(int efd);

#endif
