/*
 * client.h - outgoing connections, on the same loops and with the same
 * handler interface as accepted ones.
 */
#ifndef GEV_CLIENT_H
#define GEV_CLIENT_H

#include <gev/common.h>
#include <gev/loop.h>
#include <gev/server.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The outcome of gev_loop_connect, in the loop's thread. On success @p c is
 * the new connection and @p err is 0; the handler's on_connect runs right
 * after this returns. On failure @p c is NULL and @p err is -ECONNREFUSED,
 * -ETIMEDOUT (the connect timeout), -ECANCELED (the loop stopped first),
 * -ENETUNREACH, -ENOENT (no unix socket there), or another negative errno.
 */
typedef void (*gev_connect_fn)(gev_conn *c, int err, void *arg);

/** Options of one outgoing connection. Zero-initialize and set. */
typedef struct gev_connect_options {
  const char
      *address; /* "127.0.0.1:6379", "[::1]:80", "host:80", "unix:/path" */
  uint64_t timeout_ms; /* connect timeout; 0 = none but the kernel's */
  size_t max_buffer;   /* cap on the connection's buffers; 0 = 64 MiB */
  void *context;       /* initial gev_conn_context, visible in on_connect */
  gev_connect_fn on_result; /* may be NULL */
  void *arg;                /* passed to on_result */
} gev_connect_options;

/**
 * Open a TCP or unix-socket connection from loop @p l, non-blocking. The
 * connection then lives on @p l like an accepted one: every gev_conn_*
 * function works on it, its callbacks run in l's thread, and it is closed
 * (with on_close) when the loop stops. gev_conn_server gives the server of
 * l, if any; outgoing connections never count against max_connections.
 * Any thread. The address is resolved in the calling thread.
 *
 * @param h   copied; need not outlive the call.
 * @param opt copied (the address string is not kept).
 * @return 0 when the attempt started: opt->on_result will run exactly once
 *         (unless NULL), provided the loop runs (a loop freed without ever
 *         running drops the request). -EINVAL for NULL arguments or a malformed
 * address, -ENAMETOOLONG, -ESHUTDOWN when l has stopped, -ENOMEM; then
 *         on_result never runs.
 */
GEV_EXPORT int gev_loop_connect(gev_loop *l, const gev_handler *h,
                                const gev_connect_options *opt);

#ifdef __cplusplus
}
#endif

#endif /* GEV_CLIENT_H */
