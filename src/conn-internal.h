/* conn-internal.h - internal: not installed. */
#ifndef GEV_SRC_CONN_INTERNAL_H
#define GEV_SRC_CONN_INTERNAL_H

#include <stdatomic.h>

#include "server-internal.h"

/* Connection states, readable from any thread. Only the owning loop moves a
 * connection to CLOSED; other threads move OPEN to SHUTWR or CLOSING. */
enum {
  GEV__CONN_OPEN = 0,
  GEV__CONN_SHUTWR,  /* FIN after the queued output; still reading */
  GEV__CONN_CLOSING, /* close after the queued output; input discarded */
  GEV__CONN_CLOSED,
};

/* Flags, owned by the loop's thread. */
enum {
  GEV__CONN_CONNECTED = 1u << 0, /* on_connect ran: on_close is owed */
  GEV__CONN_PEER_EOF = 1u << 1,
  GEV__CONN_PAUSED = 1u << 2,    /* output above half the cap: not reading */
  GEV__CONN_SCHEDULED = 1u << 3, /* on the loop's list for after the pass */
  GEV__CONN_REDELIVER = 1u << 4, /* show held input again after the pass */
  GEV__CONN_FIN_SENT = 1u << 5,
  /* The handler's last look at `in`, with `out` empty, consumed nothing:
   * after the peer's EOF no more bytes can change its mind, so held input
   * no longer keeps the connection open. */
  GEV__CONN_STALLED = 1u << 6,
};

struct gev_conn {
  gev__io io; /* first: the poller hands back &io */

  /* Fixed at creation. */
  gev_loop *loop;
  gev_server *server;

  /* Any thread. */
  atomic_int refs;
  atomic_int state;
  atomic_int fd;           /* io.fd as other threads may read it */
  atomic_size_t out_seen;  /* write buffer length as last published */
  atomic_size_t reserved;  /* accepted cross-thread sends not yet queued */

  /* The loop's thread only. */
  unsigned flags;
  ringbuffer *in, *out;    /* own buffers; NULL while empty */
  ringbuffer *cur_in, *cur_out; /* the buffers on_message is looking at */
  void *ctx;
  uint64_t last_active;
  gev_conn *prev, *next;   /* the loop's open list, by last activity */
  gev_conn *next_flush;
  gev_conn *next_zombie;
  char peer[];             /* formatted peer address */
};

#endif
