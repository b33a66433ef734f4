/* listener.h - internal: not installed. A server's listening sockets: one
 * per address, or with reuse_port one per worker loop for each TCP
 * address; the addresses they come from; accepting on them. */
#ifndef GEV_SRC_LISTENER_H
#define GEV_SRC_LISTENER_H

#include <stdatomic.h>

#include "addr.h"
#include "loop-internal.h"

/* One address of the server, as given and as bound. Fixed after
 * gev_server_new; read from any thread. */
typedef struct gev__listen_addr {
  char *text;      /* the option's string, copied */
  gev__addr addr;  /* parsed; the kernel's port once bound (port 0) */
  int adopt_fd;    /* "fd:": the inherited socket; -1 otherwise */
  int family;      /* AF_INET, AF_INET6 or AF_UNIX */
  int port;        /* bound TCP port; 0 for unix */
  bool per_worker; /* reuse_port over TCP: one listener per worker loop */
  bool own_path;   /* we created the unix socket file: removed at free */
  int fd;          /* the (first) listening socket, for handing it on */
  const struct gev_transport *tp; /* its connections' transport; NULL: plain */
  void *tp_arg;
  /* gev_server_listener_fd gave the socket out: another process may
   * serve the unix path now, which must stay. Any thread. */
  atomic_bool keep_path;
} gev__listen_addr;

typedef struct gev__listener gev__listener;

/* Takes an accepted fd (and owns it from the call on): the server's
 * hand-off, reached through a pointer so that this file never calls up
 * into server.c. */
typedef void (*gev__accepted_fn)(gev__listener *ls, int fd,
                                 const struct sockaddr *sa, socklen_t len);

/* A listening socket and what it needs to survive fd exhaustion. Owned by
 * the loop it is registered with. */
struct gev__listener {
  gev__io io;
  gev_server *server;
  gev_loop *loop;     /* the loop it is registered with */
  int index;          /* its address's index, gev_conn_listener */
  bool hand_off;      /* on the acceptor: deal fds to worker loops */
  bool borrowed;      /* adopted, and gev_server_new has not succeeded */
  int reserve_fd;     /* spent on EMFILE to accept-and-close, then reopened */
  gev_timer_id retry; /* re-enables accepting after exhaustion */
  gev__accepted_fn accepted;
};

/* Parses the addresses and checks the fd: ones, before the server opens
 * any fd of its own: a closed fd named by "fd:N" must not be taken by the
 * server's epoll or eventfd first. 0 or -errno (see gev_server_new);
 * gev__listeners_free releases what it allocated. */
int gev__listeners_parse(gev_server *s, const char *const *addresses);

/* Opens the parsed addresses' listeners on the server's loops, which must
 * exist; what they accept goes to fn. On failure nothing is left bound or
 * created, and adopted fds are left open, as the caller gave them. 0 or
 * -errno. */
int gev__listeners_open(gev_server *s, gev__accepted_fn fn);

/* In l's thread while it runs: l's listeners leave the poller and close
 * (a graceful shutdown refusing new connections). */
void gev__listeners_end(gev_server *s, gev_loop *l);

/* l's listeners close (l NULL: all), without touching l, which may be
 * finished already. */
void gev__listeners_close(gev_server *s, gev_loop *l);

/* Closes what is left, removes the unix socket files the server created,
 * frees the arrays. */
void gev__listeners_free(gev_server *s);

#endif
