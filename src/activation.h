/* activation.h - internal: not installed. Listening sockets a server is
 * given instead of binding them: "fd:N" (inherited from a parent) and
 * "fd:NAME" (systemd's socket activation, LISTEN_FDS and LISTEN_FDNAMES). */
#ifndef GEV_SRC_ACTIVATION_H
#define GEV_SRC_ACTIVATION_H

#include <stdbool.h>

/* True when the address names an inherited socket ("fd:..."). */
bool gev__activation_is(const char *address);

/* The fd an "fd:N" or "fd:NAME" address names, checked to be a listening
 * stream socket of a family gev serves; it is not changed. 0 or:
 * -EINVAL (malformed, or a socket that is not listening), -ENOENT (NAME
 * is not in LISTEN_FDNAMES, or LISTEN_FDS/LISTEN_PID are missing or name
 * another process), -EBADF (not an open fd), -ENOTSOCK,
 * -ESOCKTNOSUPPORT (not SOCK_STREAM), -EAFNOSUPPORT (not IPv4, IPv6 or
 * unix). */
int gev__activation_fd(const char *address, int *fd_out, int *family_out);

/* Makes an adopted socket non-blocking and close-on-exec. 0 or -errno. */
int gev__activation_adopt(int fd);

#endif
