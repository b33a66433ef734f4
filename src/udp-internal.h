/* udp-internal.h - internal: not installed. Datagram sockets (udp.h).
 *
 * Files: udp.c (lifetime, the state table, the public calls), udp-io.c
 * (the loop's shared batch buffers, reading, the outgoing batch and the
 * send queue), udp-sock.c (creating, binding and configuring the socket),
 * udp-server.c (one socket per worker loop of a server).
 *
 * A socket is a handle of its loop (loop-internal.h): the loop calls it
 * only through its ops, and never learns what a datagram is. */
#ifndef GEV_SRC_UDP_INTERNAL_H
#define GEV_SRC_UDP_INTERNAL_H

#include <gev/udp.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "addr.h"
#include "loop-internal.h"
#include "sys.h"

/* Default datagrams per recvmmsg. */
#define GEV__UDP_BATCH 32
/* Default send_queue_max. */
#define GEV__UDP_QUEUE_MAX ((size_t)4 * 1024 * 1024)
/* The outgoing batch's payload arena: a reply that does not fit flushes
 * the batch first. The send queue may exceed its bound by this much (one
 * batch pushed back by the kernel at once). */
#define GEV__UDP_ARENA ((size_t)256 * 1024)

/* States; udp.c's table says how they change. */
typedef enum {
  GEV__US_NEW = 0,  /* created; the loop has not run the start task */
  GEV__US_OPEN,     /* reading and sending */
  GEV__US_DRAINING, /* not reading; closes once the send queue is empty */
  GEV__US_CLOSING,  /* fd closed; on_close runs after the pass */
  GEV__US_CLOSED,   /* on_close ran; the loop let go */
  GEV__US_COUNT
} gev__udp_state;

typedef enum {
  GEV__UE_START = 0, /* the start task ran */
  GEV__UE_DRAIN,     /* the loop drains (a graceful shutdown) */
  GEV__UE_EMPTY,     /* the send queue emptied */
  GEV__UE_CLOSE,     /* gev_udp_close, the loop stops, the start failed */
  GEV__UE_DONE,      /* on_close returned */
  GEV__UE_COUNT
} gev__udp_event;

/* The local address a datagram leaves from (gev_udp_reply), given to the
 * kernel as IP_PKTINFO / IPV6_PKTINFO control data. family 0: the
 * kernel's choice, as for every other send. */
typedef struct gev__udp_src {
  sa_family_t family;
  unsigned ifindex; /* IPv6 link-local: the scope */
  union {
    struct in_addr v4;
    struct in6_addr v6;
  } a;
} gev__udp_src;

/* A datagram waiting: sent from another thread, or pushed back. */
typedef struct gev__udp_pkt {
  struct gev__udp_pkt *next;
  struct sockaddr_storage to; /* to_len 0: the connected peer */
  socklen_t to_len;
  gev__udp_src from;
  size_t len;
  unsigned char data[];
} gev__udp_pkt;

typedef struct gev__udp_q {
  gev__udp_pkt *head, **tail;
  size_t bytes;
} gev__udp_q;

typedef struct gev__udp_ctx gev__udp_ctx;

/* Counters: written by the loop's thread only (a relaxed load and store,
 * no read-modify-write), read by anyone. */
enum {
  GEV__UC_DGRAMS_IN = 0,
  GEV__UC_BYTES_IN,
  GEV__UC_DGRAMS_OUT,
  GEV__UC_BYTES_OUT,
  GEV__UC_TRUNCATED,
  GEV__UC_RECV_CALLS,
  GEV__UC_SEND_CALLS,
  GEV__UC_SEND_ERRORS,
  GEV__UC_QUEUED,
  GEV__UC_ERRORS,
  GEV__UC_DROPPED,
  GEV__UC_COUNT
};

struct gev_udp {
  gev__io io; /* first: the poller hands back &io; io.fd is under mu */
  gev__handle handle;

  /* Fixed at creation. */
  gev_udp_handler h;
  gev_loop *l;
  int family;
  int port;
  int batch;
  size_t queue_max;
  bool pktinfo;
  bool own_path; /* bound a unix path: removed at close */
  gev__addr bound;
  void *user_data;

  /* Any thread. */
  atomic_int refs;        /* the caller's, and the loop's until CLOSED */
  atomic_bool detached;   /* the loop let go (or never had it) */
  atomic_bool connected;  /* gev_udp_connect succeeded */
  _Atomic size_t q_bytes; /* bytes in q (written by the loop) */
  /* The loop's thread: inbox bytes taken and not yet in q, which
   * q_bytes includes meanwhile (the bound holds while they move). */
  size_t moving;
  atomic_int fd_pub; /* io.fd for gev_udp_fd, -1 once closed */
  _Atomic uint64_t st[GEV__UC_COUNT];
  pthread_mutex_t mu; /* held for a few instructions, or one setsockopt */
  atomic_bool closed; /* set under mu: sends fail from here on */
  bool inbox_posted;  /* under mu: a task will take the inbox */
  gev__udp_q inbox;   /* under mu: sends from other threads */

  /* The loop's thread only. */
  gev__udp_state state;
  gev__udp_ctx *ctx;   /* the loop's shared buffers, from the start on */
  gev__udp_ctx *spare; /* allocated at creation, taken at the start */
  gev__udp_q q;        /* pushed back by the kernel, in order */
  int pending_err;     /* a refused send, for on_error after the pass */
  int io_err;          /* udp-io.c saw the poller fail: udp.c closes */
  bool holding;        /* DRAINING with a queue: holds the server's shutdown */
  /* An unconnected unix socket learns of room at a peer from no poller
   * (see udp-io.c): a pushed-back queue is retried on this timer, every
   * retry_ms (1 to 64, doubling while nothing goes; it holds a ref). */
  gev_timer_id retry;
  unsigned retry_ms;
  bool retry_failed; /* no timer could be had: wait for EPOLLOUT instead */
};

/* ---- udp.c ------------------------------------------------------------ */
void gev__udp_move(gev_udp *u, gev__udp_event ev);
void gev__udp_ref(gev_udp *u);
void gev__udp_unref(gev_udp *u);
/* gev_udp_new over an address already parsed (NULL: an IPv4 client). */
int gev__udp_new_at(gev_udp **out, gev_loop *l, const gev_udp_handler *h,
                    const gev_udp_options *opt, const gev__addr *bind_to);
static inline void gev__udp_count(gev_udp *u, int i, uint64_t n)
{
  uint64_t v = atomic_load_explicit(&u->st[i], memory_order_relaxed);
  atomic_store_explicit(&u->st[i], v + n, memory_order_relaxed);
}

/* ---- udp-io.c (the loop's thread) ------------------------------------- */
/* The loop's shared buffers. Each socket allocates a set when it is
 * created, in the caller's thread (NULL on ENOMEM), so that a socket that
 * cannot get them fails there, with -ENOMEM, rather than in its loop after
 * its address is bound and peers may already be sending to it. */
gev__udp_ctx *gev__udp_ctx_new(void);
void gev__udp_ctx_free(gev__udp_ctx *c);
/* Loop thread, at the socket's start: the loop's set, and *spare is freed;
 * or *spare becomes the loop's set. Takes *spare (set to NULL); never
 * fails. */
gev__udp_ctx *gev__udp_ctx_get(gev_loop *l, gev__udp_ctx **spare);
void gev__udp_ctx_put(gev__udp_ctx *c);
/* The poller's callback. */
void gev__udp_io_cb(gev__io *io, unsigned events);
/* Loop thread: into the outgoing batch, or behind what the kernel pushed
 * back. 0 or -ENOMEM. */
int gev__udp_send_in_loop(gev_udp *u, const struct sockaddr *to,
                          socklen_t to_len, const gev__udp_src *from,
                          const void *p, size_t n);
/* Sends the outgoing batch if it is u's. */
void gev__udp_flush_batch_of(gev_udp *u);
/* Hands the queue to the kernel until it pushes back. */
void gev__udp_flush_queue(gev_udp *u);
/* Read and write interest from the state and the queue: 0 or the poller's
 * error, which the caller acts on. udp-io.c never moves a socket's state:
 * what needs acting on (a poller failure: io_err; a draining socket's
 * queue emptied) it reports by scheduling the handle, and udp.c's
 * after-pass call acts. */
int gev__udp_watch(gev_udp *u);
/* Stops the retry timer of a pushed-back unix queue (entering CLOSING). */
void gev__udp_retry_cancel(gev_udp *u);
/* Frees every datagram of q; returns how many there were. */
uint64_t gev__udp_q_free(gev__udp_q *q);
static inline void gev__udp_q_init(gev__udp_q *q)
{
  q->head = NULL;
  q->tail = &q->head;
  q->bytes = 0;
}
/* Appends all of `from` to `to`; `from` ends empty. */
void gev__udp_q_splice(gev__udp_q *to, gev__udp_q *from);
gev__udp_pkt *gev__udp_pkt_new(const struct sockaddr *to, socklen_t to_len,
                               const gev__udp_src *from, const void *p,
                               size_t n);

/* ---- udp-sock.c ------------------------------------------------------- */
/* A non-blocking datagram socket of a's family, configured by opt and
 * bound to a. 0 or -errno; *fd_out owned by the caller. */
int gev__udp_socket(const gev__addr *a, const gev_udp_options *opt, int *fd_out,
                    bool *own_path);

/* recvmmsg and sendmmsg are cancellation points: called directly, as
 * sys.h explains (not under ThreadSanitizer). */
static inline int gev__sys_recvmmsg(int fd, struct mmsghdr *m, unsigned n)
{
#ifdef GEV__TSAN
  return recvmmsg(fd, m, n, MSG_DONTWAIT, NULL);
#else
  return (int)syscall(SYS_recvmmsg, fd, m, n, MSG_DONTWAIT, NULL);
#endif
}

static inline int gev__sys_sendmmsg(int fd, struct mmsghdr *m, unsigned n)
{
#ifdef GEV__TSAN
  return sendmmsg(fd, m, n, MSG_DONTWAIT | MSG_NOSIGNAL);
#else
  return (int)syscall(SYS_sendmmsg, fd, m, n, MSG_DONTWAIT | MSG_NOSIGNAL);
#endif
}

#endif
