/*
 * pool.h - a pool of persistent outgoing connections to one address.
 *
 * N gev_clients (<gev/client.h>) to the same address, spread over a
 * server's worker loops (member i on worker loop i % num_loops) or all on
 * one loop. Each is kept open with gev_client's backoff: a failed connect
 * is retried, a closed connection replaced. A handler running in a loop
 * asks for a connected member of that loop (gev_pool_get) and sends on it
 * directly, in its own thread: a backend connection per worker loop
 * without locks, as a proxy or an application server talking to a
 * database wants.
 */
#ifndef GEV_POOL_H
#define GEV_POOL_H

#include <gev/client.h>
#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A pool of persistent connections. Opaque. */
typedef struct gev_pool gev_pool;

/** Options of a pool. Zero-initialize and set. */
typedef struct gev_pool_options {
  /** Every member's options (the address, timeouts, backoff, transport);
   * connect.on_result reports every attempt of every member, connect.arg
   * is passed to it, connect.context is each connection's initial
   * context. */
  gev_client_options client;
  /** Members; 0: one per worker loop of the server (1 on a loop). */
  int size;
  /** The server whose worker loops carry the members... */
  gev_server *server;
  /** ...or the one loop that carries them all (a standalone loop, say).
   * Exactly one of server and loop. */
  gev_loop *loop;
} gev_pool_options;

/**
 * Create a pool and start connecting every member. Its connections use
 * @p h (copied) and behave as any outgoing connection (<gev/client.h>).
 * Any thread.
 * @param out receives the pool, owned by the caller (gev_pool_free);
 *            NULL on error
 * @param h the members' handler, copied
 * @param opt copied
 * @return 0; -EINVAL for NULL arguments, neither or both of server and
 *         loop, a negative size, or what gev_client_new refuses (a
 *         malformed address, bad retry limits); -ESHUTDOWN when a loop has
 *         stopped; -ENOMEM. On error nothing is left running.
 */
GEV_EXPORT int gev_pool_new(gev_pool **out, const gev_handler *h,
                            const gev_pool_options *opt);

/**
 * A connected member of loop @p l, taking turns: each call starts after
 * the member the previous call of this loop returned, and skips those
 * connecting or waiting to retry. Only in @p l's thread (a handler's, a
 * task's or a timer's on that loop); the connection is valid for the
 * rest of the current callback (to keep it longer, gev_conn_ref it).
 * @param p the pool
 * @param l the calling thread's loop, one of the pool's
 * @return the connection; NULL when no member of @p l is connected (or
 *         @p l is not the calling thread's loop, or carries none).
 */
GEV_EXPORT gev_conn *gev_pool_get(gev_pool *p, gev_loop *l);

/**
 * @param p the pool
 * @return how many members are connected now (past on_connect's start,
 *         before on_close); a snapshot. Any thread.
 */
GEV_EXPORT int gev_pool_connected(const gev_pool *p);

/**
 * @param p the pool
 * @return the number of members.
 */
GEV_EXPORT int gev_pool_size(const gev_pool *p);

/**
 * Stop every member (gev_client_free: open connections close gracefully,
 * their on_close is the last callback) and give up the caller's
 * ownership; the memory goes once every loop is done with its members.
 * From another thread than a member's loop, callbacks already due there
 * may still run shortly after, as gev_client_free says. Any thread. NULL
 * is ignored.
 * @param p the pool; NULL is ignored
 */
GEV_EXPORT void gev_pool_free(gev_pool *p);

#ifdef __cplusplus
}
#endif

#endif /* GEV_POOL_H */
