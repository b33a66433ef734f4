/* log-internal.h - internal: not installed. Messages for the hook of
 * <gev/log.h>. */
#ifndef GEV_SRC_LOG_INTERNAL_H
#define GEV_SRC_LOG_INTERNAL_H

#include <stdbool.h>

#include <gev/gev.h>

/* Whether a message at this level would reach a logger (one load). */
bool gev__log_on(gev_log_level level);
/* One line about loop l (NULL: none) and connection c (NULL: none). */
void gev__log(gev_log_level level, const gev_loop *l, const gev_conn *c,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
