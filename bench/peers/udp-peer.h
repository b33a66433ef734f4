/* udp-peer.h - what the UDP peer echo servers (bench/peers/udp-*-echo.c)
 * share: the command line, one SO_REUSEPORT datagram socket per loop, one
 * thread per loop, and a clean stop on SIGINT/SIGTERM.
 *
 *   NAME [-p PORT] [-l LOOPS] [-a HOST]
 *
 * -p 0 (the default) picks a free port, which every loop's socket then
 * binds too. Prints "listening on HOST:PORT" once every socket is bound.
 * The exit status after SIGINT or SIGTERM is 0. */
#ifndef GEV_BENCH_UDP_PEER_H
#define GEV_BENCH_UDP_PEER_H

typedef struct udp_peer_ops {
  /* Main thread: set up loop `index` serving the bound, non-blocking
   * socket `fd` (now the loop's). The loop, or NULL on failure. */
  void *(*create)(int index, int fd);
  /* The loop's own thread: run until stopped. */
  void (*run)(void *loop);
  /* Main thread (a signal handler's flag seen): make run() return. */
  void (*stop)(void *loop);
  void (*destroy)(void *loop);
} udp_peer_ops;

int udp_peer_main(int argc, char **argv, const udp_peer_ops *ops);

#endif
