/*
 * common.h - handle types, the export macro and error names shared by every
 * gev header. Included by <gev/gev.h>; users need not include it directly.
 */
#ifndef GEV_COMMON_H
#define GEV_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gev/export.h>
#include <gev/ringbuffer.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An event loop: one thread, one epoll, one eventfd, one timer heap. */
typedef struct gev_loop gev_loop;
/** A TCP or unix-socket server: one acceptor loop and its worker loops. */
typedef struct gev_server gev_server;
/** One connection, owned by one worker loop. */
typedef struct gev_conn gev_conn;

/**
 * Name a gev error code.
 * @param err a negative errno value as returned by gev functions (a positive
 *            errno value is accepted too).
 * @return a static, never NULL string. Safe from any thread.
 */
GEV_EXPORT const char *gev_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* GEV_COMMON_H */
