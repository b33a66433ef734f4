/*
 * broadcast.h - reaching every connection of a server, whichever loop
 * owns it: a visit (a function called on each) and a broadcast (the same
 * bytes sent to each).
 *
 * Each connection belongs to one worker loop, and only that loop's thread
 * may touch it without a reference. So both calls post one task into
 * every worker loop, which walks its own connections in its own thread:
 * no registry of your own, no mutex, no reference counting per
 * connection. A loop visits the connections that are open at the time
 * its task runs: accepted ones whose on_connect has run and that are not
 * closing (outgoing connections on the same loops are not the server's).
 * A connection that opens or closes meanwhile may or may not be visited.
 */
#ifndef GEV_BROADCAST_H
#define GEV_BROADCAST_H

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Called for each connection visited, in its loop's thread, as one of
 *  its callbacks would be: every gev_conn_* function may be used on it. */
typedef void (*gev_conn_visit_fn)(gev_conn *c, void *arg);

/**
 * Call fn(c, arg) for every open connection of @p s, each in the thread of
 * the loop that owns it (see the head of this file for which). A loop's
 * visits run one after the other; different loops run theirs at the same
 * time, so what @p arg points to is shared between threads (atomics or a
 * lock for what fn changes in it). Called in one of the server's worker
 * loops, that loop's visits run before this returns (so they keep their
 * order with sends made by the caller); the others' shortly after.
 * done(arg), when not NULL, runs exactly once after the last visit (in the
 * thread that made it, possibly the caller's, inside this call): free
 * @p arg there. A loop that is out of memory for its list of connections
 * visits none of them (reported to the logger). Any thread.
 * @param s the server
 * @param fn called for each connection
 * @param arg passed to @p fn and @p done
 * @param done called once after every visit; may be NULL
 * @return 0; -ESHUTDOWN when a worker loop has stopped or its visit
 *         could not be handed to it for want of memory (the other loops
 *         still visit, done still runs); -EINVAL for NULL s or fn;
 *         -ENOMEM (then nothing runs, done neither).
 */
GEV_EXPORT int gev_server_foreach_conn(gev_server *s, gev_conn_visit_fn fn,
                                       void *arg, void (*done)(void *arg));

/**
 * Send the @p n bytes at @p p to every open connection of @p s but
 * @p skip: the bytes are copied once, and that one copy is shared by all
 * the loops (freed after the last has sent it); each loop then sends as
 * gev_conn_send does in the loop's thread (written at once when the
 * connection's output is empty, else queued). A connection whose output
 * would pass max_buffer (a slow reader) misses the message, as
 * gev_conn_send's -ENOBUFS would tell; the others do not wait for it.
 * Broadcasts from one thread reach each connection in the order they were
 * made; from a worker loop's own thread, that loop's connections get the
 * bytes before this returns. Any thread.
 * @param s the server
 * @param p the bytes
 * @param n how many (0 sends nothing and returns 0)
 * @param skip a connection not to send to (the sender of a chat message),
 *             or NULL; compared, never dereferenced
 * @return 0; -ESHUTDOWN when a worker loop has stopped or could not be
 *         reached for want of memory (the others still send); -EINVAL
 *         for NULL s, or NULL p with n > 0; -ENOMEM (nothing is sent).
 */
GEV_EXPORT int gev_server_broadcast(gev_server *s, const void *p, size_t n,
                                    const gev_conn *skip);

#ifdef __cplusplus
}
#endif

#endif /* GEV_BROADCAST_H */
