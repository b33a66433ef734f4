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
  GEV__CONN_OUTGOING = 1u << 7,    /* from gev_loop_connect: not a server's */
  GEV__CONN_USER_PAUSED = 1u << 8, /* gev_conn_pause_read */
  GEV__CONN_DISCARD = 1u << 9,     /* lingering: input is dropped unseen */
};

struct gev_conn {
  gev__io io; /* first: the poller hands back &io */

  /* Fixed at creation. */
  gev_loop *loop;
  gev_server *server;   /* the loop's server; NULL on a standalone loop */
  const gev_handler *h; /* the server's, or the copy after `peer` */
  size_t max_buffer;

  /* Any thread. */
  atomic_int refs;
  atomic_int state;
  atomic_int fd;          /* io.fd as other threads may read it */
  atomic_size_t out_seen; /* write buffer length as last published */
  atomic_size_t reserved; /* accepted cross-thread sends not yet queued */

  /* The loop's thread only. */
  unsigned flags;
  ringbuffer *in, *out;         /* own buffers; NULL while empty */
  ringbuffer *cur_in, *cur_out; /* the buffers on_message is looking at */
  void *ctx;
  uint64_t last_active;
  gev_conn *prev, *next; /* the loop's open list, by last activity */
  gev_conn *next_flush;
  gev_conn *next_zombie;
  gev__connecting *connecting; /* while an outgoing connect is under way */
  void (*drain_fn)(gev_conn *c, void *arg);
  void *drain_arg;
  size_t low_water;
  gev_timer_id linger_timer; /* gev_conn_close_lingering's deadline, or 0 */
  char peer[];               /* formatted peer address */
};

/* conn.c, for connect.c: an outgoing connection for fd on loop l, with its
 * own copy of h or (copy_h false) pointing at h, which must then outlive
 * it. NULL on ENOMEM. */
gev_conn *gev__conn_new_outgoing(gev_loop *l, const gev_handler *h, bool copy_h,
                                 size_t max_buffer, int fd,
                                 const struct sockaddr *sa, socklen_t len);
/* conn.c: in l's thread, for a connection registered with the poller:
 * joins the loop's list and runs on_connect. */
void gev__conn_established(gev_conn *c, gev_connect_fn result, void *arg);
/* connect.c, for client.c: gev_loop_connect to a parsed address, with
 * connections pointing at h (not a copy): h must outlive them. */
int gev__connect_shared(gev_loop *l, const gev_handler *h,
                        const gev__addr *addr, const gev_connect_options *opt);
/* conn.c: frees a connection that never attached (fd left alone). */
void gev__conn_free_unattached(gev_conn *c);

/* `reserved` once sending has ended for good (close or FIN decided). */
#define GEV__RESERVE_CLOSED SIZE_MAX

static inline size_t gev__buf_len(const ringbuffer *rb)
{
  return rb ? ringbuffer_len(rb) : 0;
}

/* Bytes promised to other threads' sends; 0 once sending has ended. */
static inline size_t gev__conn_reserved(gev_conn *c)
{
  size_t r = atomic_load(&c->reserved);
  return r == GEV__RESERVE_CLOSED ? 0 : r;
}

/* Lets other threads see the write buffer's length for their cap check. */
static inline void gev__conn_publish_out(gev_conn *c)
{
  atomic_store_explicit(&c->out_seen, gev__buf_len(c->out),
                        memory_order_relaxed);
}

/* conn.c, the loop's thread only: */
/* A spare buffer capped at c's max_buffer; NULL on ENOMEM. */
ringbuffer *gev__conn_pool_get(gev_conn *c);
/* Queues c for the end of the pass (output, pending close or FIN, held
 * input); the loop's reference keeps c alive until then. */
void gev__conn_schedule(gev_conn *c);
/* Closes at once, dropping what is queued; on_close runs. Idempotent. */
void gev__conn_close_now(gev_conn *c);
/* Sends from p straight to the socket (nothing may be queued before it):
 * the bytes the kernel took, 0 when it took none now, or -errno. */
ssize_t gev__conn_write_direct(gev_conn *c, const void *p, size_t n);

#endif
