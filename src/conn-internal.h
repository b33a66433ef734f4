/* conn-internal.h - internal: not installed. */
#ifndef GEV_SRC_CONN_INTERNAL_H
#define GEV_SRC_CONN_INTERNAL_H

#include <stdatomic.h>

#include <gev/transport.h>

#include "server-internal.h"

#define GEV__IDLE_KINDS 3 /* gev_idle_kind's values */

/* Connection states. The table of transitions, with the event that causes
 * each and what it does, heads conn.c; every change of state goes through
 * its one function. Readable from any thread; other threads make only the
 * transitions of gev_conn_close and gev_conn_shutdown_write. */
enum {
  GEV__CS_OPEN = 0,      /* reading, handler sees input, sending */
  GEV__CS_HALF_OPEN,     /* the peer's FIN came; the handler keeps sending */
  GEV__CS_DRAINING,      /* the peer's FIN came; close once flushed */
  GEV__CS_SHUTTING_DOWN, /* our FIN waits for the output; still reading */
  GEV__CS_SHUT_WR,       /* our FIN is sent; reading until the peer's */
  GEV__CS_LINGERING,     /* FIN after the output; input dropped; deadline */
  GEV__CS_LINGER_FIN,    /* FIN sent; dropping input until EOF or deadline */
  GEV__CS_CLOSING,       /* close once flushed; input dropped */
  GEV__CS_FLUSHING,      /* close once flushed; nothing more to read */
  GEV__CS_CLOSED,
  GEV__CS_HANDSHAKE, /* the transport's handshake runs; no handler yet */
  GEV__CS_DETACHING, /* gev_conn_detach: the fd is handed back after the
                        pass, once no send is on its way */
  GEV__CS_ABORTING,  /* gev_conn_abort: output dropped, RST after the pass */
  GEV__CS_COUNT
};

/* Events of the state table. */
enum {
  GEV__CE_PEER_EOF = 0,   /* read gave EOF; the handler lets it close */
  GEV__CE_PEER_EOF_KEEP,  /* read gave EOF; the handler has on_peer_eof */
  GEV__CE_CLOSE,          /* gev_conn_close */
  GEV__CE_SHUTDOWN_WRITE, /* gev_conn_shutdown_write */
  GEV__CE_CLOSE_LINGERING,
  GEV__CE_FLUSHED,  /* output and accepted sends are out (FIN or close due) */
  GEV__CE_DEADLINE, /* the linger deadline or the idle timeout */
  GEV__CE_ERROR,    /* socket error, reset, a cap, out of memory */
  GEV__CE_LOOP_STOP,
  GEV__CE_READY,    /* the transport's handshake completed */
  GEV__CE_DETACH,   /* gev_conn_detach */
  GEV__CE_DETACHED, /* no send on its way: the fd and buffers go back */
  GEV__CE_ABORT,    /* gev_conn_abort (raised in the loop) */
  GEV__CE_RESET,    /* after the pass of an abort: close with RST */
  GEV__CE_COUNT
};

/* Flags: facts beside the state, owned by the loop's thread. */
enum {
  GEV__CF_CONNECTED = 1u << 0,   /* on_connect ran: on_close is owed */
  GEV__CF_PAUSED = 1u << 1,      /* input held, output high: not reading */
  GEV__CF_USER_PAUSED = 1u << 2, /* gev_conn_pause_read */
  GEV__CF_REDELIVER = 1u << 3,   /* show held input again after the pass */
  /* The handler's last look at `in`, with `out` empty, consumed nothing:
   * after the peer's EOF no more bytes can change its mind, so held input
   * no longer keeps the connection open. */
  GEV__CF_STALLED = 1u << 4,
  GEV__CF_OUTGOING = 1u << 5, /* from gev_loop_connect */
  /* The transport's read waits for writability; its write (or FIN) for
   * readability; its shutdown must be tried again. */
  GEV__CF_READ_WANTS_WRITE = 1u << 6,
  GEV__CF_WRITE_WANTS_READ = 1u << 7,
  GEV__CF_FIN_PENDING = 1u << 8,
  GEV__CF_STARTED = 1u << 9,   /* result and owner told: the start ran */
  GEV__CF_DRAINING = 1u << 10, /* the server shuts down: close once idle */
  GEV__CF_WAKE = 1u << 11,     /* gev_conn_wake: on_message after the pass */
};

/* Who owns an outgoing connection besides its handler (a gev_client):
 * told when it opens and when it has closed. Loop thread. */
typedef struct gev__conn_owner {
  /* Before on_connect. false: close c at once, unseen (no on_connect,
   * no on_close). */
  bool (*opened)(gev_conn *c, void *arg);
  /* Just before on_close, and just after it (both also for an unseen
   * connection, which gets no on_close). */
  void (*closing)(gev_conn *c, void *arg);
  void (*closed)(gev_conn *c, void *arg);
} gev__conn_owner;

struct gev_conn {
  gev__io io;         /* first: the poller hands back &io */
  gev__handle handle; /* registry and after-pass queue of the loop */

  /* Fixed at creation. */
  gev_loop *loop;
  gev_server *server; /* the loop's server; NULL on a standalone loop */
  /* Changed only by gev_conn_set_max_buffer, in the loop's thread, with an
   * atomic store: other threads' sends read it atomically (reserve). */
  size_t max_buffer;
  int listener; /* index of the server's listener; -1 for outgoing */
  const gev_transport *tp;
  const gev__conn_owner *owner;
  void *owner_arg;

  /* Any thread. */
  atomic_int refs;
  atomic_int state;
  atomic_int fd;           /* io.fd as other threads may read it */
  atomic_size_t out_seen;  /* write buffer length as last published */
  atomic_size_t reserved;  /* accepted cross-thread sends not yet queued */
  _Atomic(char *) local;   /* gev_conn_local_addr, formatted on first use */
  atomic_bool wake_posted; /* a gev_conn_wake from another thread is queued */

  /* The loop's thread only. */
  const gev_handler *h; /* the server's, the connect's copy, or h_own */
  gev_handler *h_own;   /* gev_conn_set_handler's copy */
  void *tp_state;
  unsigned flags;
  ringbuffer *in, *out;         /* own buffers; NULL while empty */
  ringbuffer *cur_in, *cur_out; /* the buffers on_message is looking at */
  void *ctx;
  void (*ctx_free)(void *ctx);         /* runs when the last reference goes */
  uint64_t last_read, last_write;      /* now_ms of the last byte in, out */
  uint64_t idle_mark[GEV__IDLE_KINDS]; /* on_idle ran: its period restarts */
  uint32_t idle_ms[GEV__IDLE_KINDS];   /* gev_idle_kind order; 0 = off */
  gev__list active; /* in the loop's list while a timeout is set */
  void (*drain_fn)(gev_conn *c, void *arg);
  void *drain_arg;
  size_t low_water;
  gev_timer_id linger_timer; /* gev_conn_close_lingering's deadline, or 0 */
  gev_detach_fn detach_fn;   /* gev_conn_detach's, until it ran */
  void *detach_arg;
  gev_connect_fn result; /* outgoing: reported once the start runs */
  void *result_arg;
  int error;         /* why a handshake failed, for the outgoing result */
  unsigned char why; /* GEV__WHY_*: the reason its close is counted under */
  char peer[];       /* formatted peer address */
};

/* ---- conn.c: creation and the lifecycle -------------------------------- */

/* A connection for fd on loop l. h must outlive it, unless copy_h: then
 * it is copied into the connection's allocation. NULL on ENOMEM, fd
 * untouched. Any thread (nothing is registered yet). */
gev_conn *gev__conn_new(gev_loop *l, const gev_handler *h, bool copy_h,
                        size_t max_buffer, int fd, const struct sockaddr *sa,
                        socklen_t len);
/* Loop thread: opens the transport (tp NULL: plaintext), registers c with
 * the poller and the loop, and runs on_connect, after result(c, 0, arg)
 * when given; with a transport that has a handshake, those wait for it to
 * complete (and result reports its failure). On failure c is freed with
 * its fd and the negative errno is returned (result is not called). */
int gev__conn_start(gev_conn *c, const gev_transport *tp, void *tp_arg,
                    gev_connect_fn result, void *arg);
/* Frees a connection that never started; its fd is closed too. */
void gev__conn_free_unstarted(gev_conn *c);

/* Loop thread: event ev on c (the table in conn.c). For the caller-driven
 * events (close, shutdown, lingering) 0 or -ENOTCONN; internal events are
 * always valid (asserted in debug builds). */
int gev__conn_event(gev_conn *c, int ev);
/* Loop thread: c has work for the end of the pass (output, held input,
 * a pending close or FIN). The loop's reference keeps c alive until then. */
void gev__conn_schedule(gev_conn *c);
/* Loop thread: sends from p straight to the socket (nothing may be queued
 * before it): the bytes taken, 0 when none now, or -errno. */
ssize_t gev__conn_write_direct(gev_conn *c, const void *p, size_t n);
/* Loop thread: gev_conn_close_lingering's work. */
int gev__conn_linger(gev_conn *c, uint64_t timeout_ms);
/* Loop thread: gev_conn_pause_read / resume_read. */
void gev__conn_set_paused(gev_conn *c, bool pause);
/* ---- conn-idle.c: the idle timeouts ------------------------------------- */

/* c's timeouts from a server's options (idle_timeout_ms, reader_idle_ms,
 * writer_idle_ms). Before c starts. */
void gev__conn_idle_defaults(gev_conn *c, const gev_options *o);
/* Loop thread: c joins the loop's sweep (or leaves it, with no timeout
 * set), which then runs often enough for c's shortest timeout. */
void gev__conn_idle_watch(gev_conn *c);
/* Loop thread: gev_conn_wake's work (on_message after the pass). */
void gev__conn_wake(gev_conn *c);
/* The connection a loop handle is, or NULL for another kind of handle
 * (broadcast.c walks a loop's registry). */
gev_conn *gev__conn_of_handle(gev__handle *h);
/* The state's rules (any thread). */
bool gev__conn_state_sends(int state);     /* sends are accepted */
bool gev__conn_state_connected(int state); /* gev_conn_connected */
bool gev__conn_state_drops(int state);     /* output is dropped (abort) */
/* Whether c is an accepted connection its handler has met and that is
 * not closing (the ones gev_server_foreach_conn visits). Loop thread. */
static inline bool gev__conn_visible(const gev_conn *c)
{
  return (c->flags & GEV__CF_CONNECTED) && !(c->flags & GEV__CF_OUTGOING) &&
         gev__conn_state_connected(atomic_load(&((gev_conn *)c)->state));
}

/* ---- connect.c, for client.c ------------------------------------------- */

/* gev_loop_connect whose opt->context is the library's own: when the loop
 * is freed before the request ever ran (no on_result), drop_context(it)
 * frees it. On a negative return the caller still owns it. */
int gev__loop_connect_owned(gev_loop *l, const gev_handler *h,
                            const gev_connect_options *opt,
                            void (*drop_context)(void *context));

/* -EINVAL when a socket option or idle timeout of opt is negative, else 0. */
int gev__connect_check(const gev_connect_options *opt);

/* gev_loop_connect to a parsed target (resolve.h: a name is looked up
 * anew by every call). The connection points at h (not a copy: h must
 * outlive it) and tells owner when it opens and closes. */
struct gev__target;
int gev__connect_shared(gev_loop *l, const gev_handler *h,
                        const struct gev__target *target,
                        const gev_connect_options *opt,
                        const gev__conn_owner *owner, void *owner_arg);

/* ---- client.c, for pool.c ---------------------------------------------- */

/* What a persistent client tells its watcher, in its loop's thread: its
 * connection is up (before on_connect) or down (before on_close), and,
 * last, that the loop has let go of the client for good. */
enum { GEV__CLIENT_UP, GEV__CLIENT_DOWN, GEV__CLIENT_GONE };
typedef void (*gev__client_watch_fn)(void *arg, int ev, gev_conn *c);
/* gev_client_new with a watcher (NULL: none). */
int gev__client_new_watched(gev_client **out, gev_loop *l, const gev_handler *h,
                            const gev_client_options *opt,
                            gev__client_watch_fn watch, void *watch_arg);

/* ---- conn-ref.c: run something in a connection's loop ------------------ */

/* One request for c's loop. Embed it first in a larger struct to carry
 * more (a send's bytes). fn runs in the loop unless c closed meanwhile. */
typedef struct gev__conn_op gev__conn_op;
struct gev__conn_op {
  gev_conn *c;
  int (*fn)(gev_conn *c, gev__conn_op *op);
  uint64_t arg;
};

/* Runs fn(c, op) now when called in c's loop (its result is returned),
 * else posts it with a reference to c (0 or -ENOTCONN when the loop has
 * stopped). op is malloc'ed by the caller and always freed here (also when
 * the loop drops it unrun). */
int gev__conn_post(gev_conn *c, gev__conn_op *op);
/* The same for an op without payload: allocated here (-ENOMEM). */
int gev__conn_call(gev_conn *c, int (*fn)(gev_conn *c, gev__conn_op *op),
                   uint64_t arg);

/* ---- small helpers --------------------------------------------------------
 */

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

static inline int gev__conn_state(const gev_conn *c)
{
  return atomic_load(&((gev_conn *)c)->state);
}

#endif
