/*
 * stats.h - what a loop and a server have done: counters readable from any
 * thread while they run.
 */
#ifndef GEV_STATS_H
#define GEV_STATS_H

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A snapshot of a loop's (or, summed, a server's) counters. Counters only
 *  grow; the "now" figures (open, pending) and the times are readings. */
typedef struct gev_stats {
  uint64_t conns_open;     /**< connections open now */
  uint64_t conns_accepted; /**< accepted since start (incoming) */
  uint64_t conns_closed;   /**< closed since start */
  uint64_t conns_refused;  /**< refused by max_connections */
  uint64_t bytes_read, bytes_written;
  uint64_t messages; /**< on_message calls */
  uint64_t loop_passes;
  /* The closes by reason; they add up to conns_closed. */
  uint64_t closed_local;       /**< by the handler: close, shutdown, linger */
  uint64_t closed_peer;        /**< the peer's EOF came first */
  uint64_t closed_idle;        /**< idle_timeout_ms */
  uint64_t closed_cap;         /**< input that max_buffer could never hold */
  uint64_t closed_error;       /**< reset, socket error, no memory, handshake */
  uint64_t closed_shutdown;    /**< still open when the loop stopped (the
                                    deadline of gev_server_shutdown, or
                                    gev_server_stop) */
  uint64_t handshake_failures; /**< a transport's handshake failed (TLS) */
  uint64_t tasks_run;
  uint64_t tasks_pending; /**< queued now */
  uint64_t timers_fired;
  uint64_t timers_pending;      /**< armed now */
  uint64_t cross_thread_sends;  /**< gev_conn_send calls from other threads */
  uint64_t backpressure_pauses; /**< reading paused for a full output */
  uint64_t busy_us;             /**< CPU time of the loop's thread */
  uint64_t wait_us; /**< time since the loop started, less busy_us */
  /** The worst lateness of a timer in the last one to two seconds, in ms:
   *  how far the loop lags behind when it is busy (a long callback, a
   *  flood). 0 on a loop that has no timer due. */
  uint64_t lag_max_ms;
  /* The loop's datagram sockets (udp.h), all of them together; their
   * bytes are in bytes_read and bytes_written too. */
  uint64_t datagrams_in;        /**< received */
  uint64_t datagrams_out;       /**< taken by the kernel */
  uint64_t datagram_bytes_in;   /**< payload bytes received */
  uint64_t datagram_bytes_out;  /**< payload bytes taken by the kernel */
  uint64_t datagrams_dropped;   /**< accepted by a send, never sent: the
                                     socket closed with them queued */
  uint64_t datagrams_truncated; /**< received cut short */
  /* more fields may follow; callers zero-initialize */
} gev_stats;

/**
 * Fill @p out with a snapshot of @p l's counters, consistent for the loop.
 * Any thread, any time while the loop exists. Called from the loop's own
 * thread it is exact; from a thread that runs no gev loop it asks the
 * loop to publish its figures and waits for that briefly (at most about
 * 50 ms, when the loop is busy in a long callback); from another loop's
 * thread it does not wait (two loops reading each other would stall
 * both) and returns the loop's last publication, which the request
 * brings up to date within a pass.
 * @param l the loop
 * @param out receives the snapshot (zero-initialize it)
 * @return 0; -EINVAL for NULL.
 */
GEV_EXPORT int gev_loop_stats(const gev_loop *l, gev_stats *out);

/**
 * The sum over the server's acceptor and worker loops (gev_loop_stats of
 * each; the "lag" is the worst of them). Any thread.
 * @param s the server
 * @param out receives the sums (zero-initialize it)
 * @return 0; -EINVAL for NULL.
 */
GEV_EXPORT int gev_server_stats(const gev_server *s, gev_stats *out);

/**
 * Write the server's figures in the Prometheus text exposition format
 * (0.0.4) into @p buf: metric names prefixed gev_, one series per worker
 * loop (label loop="N"; "acceptor" for the acceptor loop), e.g.
 * gev_connections_open, gev_connections_accepted_total,
 * gev_bytes_read_total, gev_bytes_written_total, gev_messages_total,
 * and the datagram sockets' gev_datagrams_received_total,
 * gev_datagrams_sent_total, gev_datagram_bytes_received_total,
 * gev_datagram_bytes_sent_total, gev_datagrams_dropped_total and
 * gev_datagrams_truncated_total.
 * Any thread (it reads as gev_loop_stats does).
 * @param s the server
 * @param buf where the text goes; may be NULL when @p len is 0
 * @param len the size of @p buf in bytes
 * @return the length of the text (without a NUL), written whole when it
 *         is less than @p len (NUL-terminated); otherwise nothing usable is
 *         written and the caller retries with a buffer of at least the
 *         returned length + 1; -EINVAL for NULL s (or NULL buf with a
 *         non-zero len); -ENOMEM.
 */
GEV_EXPORT int gev_server_metrics(const gev_server *s, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* GEV_STATS_H */
