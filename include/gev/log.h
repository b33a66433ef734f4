/*
 * log.h - a logging hook. The library is silent unless given one.
 */
#ifndef GEV_LOG_H
#define GEV_LOG_H

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** How much a message matters; a logger set for a level gets that level
 *  and the ones above it. */
typedef enum {
  GEV_LOG_ERROR = 0, /**< something stopped working (a loop failed) */
  GEV_LOG_WARN,      /**< a resource ran out (fds), a cap closed a peer */
  GEV_LOG_INFO,      /**< rare, notable events; nothing per byte or per
                          normal connection */
  GEV_LOG_DEBUG      /**< chatty: every connection's close and why */
} gev_log_level;

/** A logger: @p msg is one line without a newline, naming the loop and
 *  the connection it concerns ("loop 2 conn 127.0.0.1:5555: ..."); it is
 *  valid only during the call. */
typedef void (*gev_log_fn)(gev_log_level level, const char *msg, void *arg);

/**
 * Set the process-wide logger: @p fn gets every message at @p max_level or
 * above (GEV_LOG_ERROR is the highest), with @p arg. NULL (the default)
 * discards every message. fn may run in any of the library's threads,
 * concurrently, never with a library lock held; it must not block for
 * long (it runs inside a loop). Any thread; a message being formatted in
 * another thread while the logger changes may still go to the old one.
 * @param fn the logger; NULL discards every message
 * @param max_level the least important level passed on (GEV_LOG_DEBUG for all)
 * @param arg passed to every call of @p fn
 */
GEV_EXPORT void gev_set_logger(gev_log_fn fn, gev_log_level max_level,
                               void *arg);

#ifdef __cplusplus
}
#endif

#endif /* GEV_LOG_H */
