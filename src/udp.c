/* udp.c - datagram sockets: lifetime, states, and the calls of udp.h.
 *
 * A socket moves through five states, only by gev__udp_move and this
 * table (state, event -> next state; '-' ignores the event):
 *
 *   state      START  DRAIN     EMPTY    CLOSE    DONE
 *   NEW        OPEN   -         -        CLOSING* -
 *   OPEN       -      DRAINING  -        CLOSING  -
 *   DRAINING   -      -         CLOSING  CLOSING  -
 *   CLOSING    -      -         -        -        CLOSED
 *   CLOSED     -      -         -        -        -
 *
 * (*) only from the start task, which holds the loop's reference.
 * Entering OPEN watches the fd for reading; DRAINING stops reading and
 * closes at once when nothing waits to be sent; CLOSING sends what the
 * kernel takes without waiting, drops the rest, closes the fd and asks
 * for the after-pass call that runs on_close; CLOSED lets go of the loop.
 *
 * Ownership: refs counts the caller (until gev_udp_free) and the loop
 * (from gev_udp_new until CLOSED, or until the loop is freed with the
 * start task unrun). Tasks posted for the socket hold one each. */
#include "udp-internal.h"
#include "log-internal.h"
#include "server-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define X GEV__US_COUNT /* no move */
static const unsigned char next_state[GEV__US_COUNT][GEV__UE_COUNT] = {
    [GEV__US_NEW] = {GEV__US_OPEN, X, X, GEV__US_CLOSING, X},
    [GEV__US_OPEN] = {X, GEV__US_DRAINING, X, GEV__US_CLOSING, X},
    [GEV__US_DRAINING] = {X, X, GEV__US_CLOSING, GEV__US_CLOSING, X},
    [GEV__US_CLOSING] = {X, X, X, X, GEV__US_CLOSED},
    [GEV__US_CLOSED] = {X, X, X, X, X},
};
#undef X

void gev__udp_ref(gev_udp *u)
{
  atomic_fetch_add_explicit(&u->refs, 1, memory_order_relaxed);
}

void gev__udp_unref(gev_udp *u)
{
  if (atomic_fetch_sub_explicit(&u->refs, 1, memory_order_acq_rel) != 1)
    return;
  gev__udp_q_free(&u->inbox);
  gev__udp_q_free(&u->q);
  gev__udp_ctx_free(u->spare); /* never started */
  if (u->io.fd >= 0) {         /* never started: the loop never had it */
    close(u->io.fd);
    if (u->own_path)
      unlink(((struct sockaddr_un *)&u->bound.ss)->sun_path);
  }
  pthread_mutex_destroy(&u->mu);
  free(u);
}

static void unref_task(void *arg)
{
  gev__udp_unref(arg);
}

/* Sends stop being accepted; what other threads queued is taken. */
static void refuse_sends(gev_udp *u, gev__udp_q *taken)
{
  pthread_mutex_lock(&u->mu);
  atomic_store(&u->closed, true);
  *taken = u->inbox;
  if (!taken->head)
    taken->tail = &taken->head;
  gev__udp_q_init(&u->inbox);
  pthread_mutex_unlock(&u->mu);
}

/* Loop thread: n accepted datagrams will never be sent. */
static void dropped(gev_udp *u, uint64_t n)
{
  gev__udp_count(u, GEV__UC_DROPPED, n);
  u->l->st.v[GEV__S_DGRAMS_DROPPED] += n;
}

static void close_fd(gev_udp *u)
{
  pthread_mutex_lock(&u->mu); /* the option calls use the fd under mu */
  gev__loop_io_del(u->l, &u->io);
  close(u->io.fd);
  u->io.fd = -1;
  atomic_store(&u->fd_pub, -1);
  pthread_mutex_unlock(&u->mu);
  if (u->own_path)
    unlink(((struct sockaddr_un *)&u->bound.ss)->sun_path);
}

/* The last chance to send: one round without waiting, then the fd goes. */
static void enter_closing(gev_udp *u)
{
  gev__udp_q taken;

  refuse_sends(u, &taken);
  if (u->ctx) {
    gev__udp_flush_batch_of(u);
    gev__udp_q_splice(&u->q, &taken);
    gev__udp_flush_queue(u);
  }
  dropped(u, gev__udp_q_free(&u->q) + gev__udp_q_free(&taken));
  atomic_store_explicit(&u->q_bytes, 0, memory_order_relaxed);
  gev__udp_retry_cancel(u);
  close_fd(u);
  gev__handle_schedule(&u->handle);
  if (u->holding) { /* last: it may end the server's shutdown */
    u->holding = false;
    gev__server_release(u->l->server);
  }
}

static void enter_closed(gev_udp *u)
{
  gev__handle_unregister(&u->handle);
  gev__udp_ctx_put(u->ctx);
  u->ctx = NULL;
  atomic_store(&u->detached, true);
  gev__udp_unref(u); /* the loop's */
}

/* A socket the poller no longer watches as asked would never read (or
 * send) again, silently: it closes, and on_error says why first (after the
 * pass, with on_close). */
static void watch(gev_udp *u)
{
  int err = gev__udp_watch(u);

  if (err < 0 && u->state < GEV__US_CLOSING) {
    gev__log(GEV_LOG_WARN, u->l, NULL, "udp: poller failed: %s",
             gev_strerror(err));
    u->pending_err = err;
    gev__udp_move(u, GEV__UE_CLOSE);
  }
}

/* Not reading; what waits to be sent keeps going out as the kernel takes
 * it, and the server's shutdown waits for that (until its deadline, when
 * the loop stops and the socket closes with what is left). */
static void enter_draining(gev_udp *u)
{
  watch(u);
  gev__udp_flush_batch_of(u); /* replies of this pass join the queue */
  if (u->state != GEV__US_DRAINING)
    return;
  if (!u->q.head) {
    gev__udp_move(u, GEV__UE_EMPTY);
    return;
  }
  if (u->l->server) {
    u->holding = true;
    gev__server_hold(u->l->server);
  }
}

void gev__udp_move(gev_udp *u, gev__udp_event ev)
{
  unsigned char to = next_state[u->state][ev];

  gev__assert_in_loop(u->l);
  if (to == GEV__US_COUNT)
    return;
  u->state = (gev__udp_state)to;
  switch (u->state) {
  case GEV__US_OPEN: watch(u); break;
  case GEV__US_DRAINING: enter_draining(u); break;
  case GEV__US_CLOSING: enter_closing(u); break;
  case GEV__US_CLOSED: enter_closed(u); break;
  default: break;
  }
}

/* ---- the handle ------------------------------------------------------- */

static void after_pass(gev__handle *hd)
{
  gev_udp *u = gev__container_of(hd, gev_udp, handle);
  int err = u->pending_err;

  u->pending_err = 0;
  if (u->state < GEV__US_CLOSING && atomic_load(&u->closed)) {
    u->pending_err = err;
    gev__udp_move(u, GEV__UE_CLOSE); /* gev_udp_close in another thread */
    return;
  }
  if (u->state == GEV__US_CLOSING) {
    if (err) { /* why it closed (watch) */
      gev__udp_count(u, GEV__UC_ERRORS, 1);
      if (u->h.on_error)
        u->h.on_error(u, err);
    }
    if (u->h.on_close)
      u->h.on_close(u);
    gev__udp_move(u, GEV__UE_DONE);
    return;
  }
  if (u->io_err) { /* udp-io.c saw the poller fail: as watch does */
    gev__log(GEV_LOG_WARN, u->l, NULL, "udp: poller failed: %s",
             gev_strerror(u->io_err));
    u->pending_err = u->io_err;
    u->io_err = 0;
    gev__udp_move(u, GEV__UE_CLOSE);
    return;
  }
  gev__udp_flush_batch_of(u);
  if (u->state == GEV__US_DRAINING && !u->q.head) {
    u->pending_err = err; /* reported with on_close */
    gev__udp_move(u, GEV__UE_EMPTY);
    return;
  }
  if (err && u->state < GEV__US_CLOSING) {
    gev__udp_count(u, GEV__UC_ERRORS, 1);
    if (u->h.on_error)
      u->h.on_error(u, err);
  }
}

static void stop(gev__handle *hd)
{
  gev__udp_move(gev__container_of(hd, gev_udp, handle), GEV__UE_CLOSE);
}

static void drain(gev__handle *hd)
{
  gev__udp_move(gev__container_of(hd, gev_udp, handle), GEV__UE_DRAIN);
}

static const gev__handle_ops udp_ops = {"udp", after_pass, stop, drain};

/* ---- start and end ---------------------------------------------------- */

static void start_task(void *arg)
{
  gev_udp *u = arg;
  bool closed;
  int err;

  gev__handle_register(&u->handle);
  u->ctx = gev__udp_ctx_get(u->l, &u->spare);
  /* io.fd is under mu: an option call (gev_udp_connect, setsockopt) may
   * be using the fd in another thread right now. */
  pthread_mutex_lock(&u->mu);
  err = gev__loop_io_add(u->l, &u->io, 0);
  closed = atomic_load(&u->closed);
  pthread_mutex_unlock(&u->mu);
  if (err < 0 && u->h.on_error)
    u->h.on_error(u, err); /* the socket cannot work: it closes */
  if (err < 0 || closed || u->l->finishing) {
    gev__udp_move(u, GEV__UE_CLOSE);
    return;
  }
  gev__udp_move(u, GEV__UE_START);
  if (u->l->draining) /* started during a graceful shutdown */
    gev__udp_move(u, GEV__UE_DRAIN);
}

/* The loop was freed with the start task unrun: the socket is closed as
 * by a loop that ended, so later sends fail instead of posting to the
 * freed loop. */
static void start_drop(void *arg)
{
  gev_udp *u = arg;
  gev__udp_q taken;

  refuse_sends(u, &taken);
  gev__udp_q_free(&taken); /* never sent: there is no loop to count them */
  atomic_store(&u->detached, true);
  gev__udp_unref(u);
}

static int check_options(const gev_loop *l, const gev_udp_handler *h,
                         const gev_udp_options *o)
{
  if (!l || !h || !o)
    return -EINVAL;
  if (o->batch < 0 || o->batch > GEV_UDP_BATCH_MAX || o->rcvbuf < 0 ||
      o->sndbuf < 0 || o->tos < 0 || o->tos > 255)
    return -EINVAL;
  return 0;
}

static gev_udp *alloc_udp(gev_loop *l, const gev_udp_handler *h,
                          const gev_udp_options *o)
{
  gev_udp *u = calloc(1, sizeof(*u));

  if (!u)
    return NULL;
  if (pthread_mutex_init(&u->mu, NULL) != 0) {
    free(u);
    return NULL;
  }
  u->h = *h;
  u->l = l;
  u->io = (gev__io){.fd = -1, .cb = gev__udp_io_cb};
  u->batch = o->batch ? o->batch : GEV__UDP_BATCH;
  u->queue_max = o->send_queue_max ? o->send_queue_max : GEV__UDP_QUEUE_MAX;
  u->pktinfo = o->pktinfo;
  u->user_data = o->user_data;
  gev__handle_init(&u->handle, l, &udp_ops);
  gev__udp_q_init(&u->inbox);
  gev__udp_q_init(&u->q);
  atomic_init(&u->refs, 2); /* the caller's and the loop's */
  atomic_init(&u->detached, false);
  atomic_init(&u->connected, false);
  atomic_init(&u->closed, false);
  atomic_init(&u->q_bytes, 0);
  atomic_init(&u->fd_pub, -1);
  for (int i = 0; i < GEV__UC_COUNT; i++)
    atomic_init(&u->st[i], 0);
  return u;
}

/* Binds (and connects) in the caller's thread, so that errors are the
 * call's own. */
static int open_socket(gev_udp *u, const gev_udp_options *o,
                       const gev__addr *bind_to, const gev__addr *peer)
{
  int err = gev__udp_socket(bind_to, o, &u->io.fd, &u->own_path);

  if (err < 0)
    return err;
  u->bound = *bind_to;
  u->family = bind_to->ss.ss_family;
  /* No control buffer on a unix socket: a local peer could attach
   * SCM_RIGHTS to a datagram, and given one, the kernel would install
   * those fds here, where nothing closes them. Without it, it drops them. */
  if (u->family == AF_UNIX)
    u->pktinfo = false;
  u->port = gev__addr_local_port(u->io.fd);
  atomic_store(&u->fd_pub, u->io.fd);
  if (peer) {
    if (peer->ss.ss_family != u->family)
      return -EINVAL;
    if (connect(u->io.fd, (const struct sockaddr *)&peer->ss, peer->len) < 0)
      return -errno;
    atomic_store(&u->connected, true);
  }
  return 0;
}

int gev__udp_new_at(gev_udp **out, gev_loop *l, const gev_udp_handler *h,
                    const gev_udp_options *o, const gev__addr *bind_to)
{
  gev__addr any = {.len = sizeof(struct sockaddr_in)}, peer;
  gev_udp *u;
  int err = -EINVAL;

  if (out)
    *out = NULL;
  if (!out || (err = check_options(l, h, o)) < 0)
    return err;
  if (o->connect && (err = gev__addr_parse(o->connect, &peer)) < 0)
    return err;
  if (!bind_to) { /* a client: the wildcard of its peer's family */
    any.ss.ss_family = o->connect ? peer.ss.ss_family : AF_INET;
    if (any.ss.ss_family == AF_INET6)
      any.len = sizeof(struct sockaddr_in6);
    else if (any.ss.ss_family == AF_UNIX)
      any.len = sizeof(sa_family_t); /* unnamed */
    bind_to = &any;
  }
  if (!(u = alloc_udp(l, h, o)))
    return -ENOMEM;
  err = (u->spare = gev__udp_ctx_new()) ? 0 : -ENOMEM;
  if (err == 0)
    err = open_socket(u, o, bind_to, o->connect ? &peer : NULL);
  if (err == 0) {
    *out = u; /* before the post: the start task may run at once */
    err = gev__loop_post_owned(l, start_task, u, start_drop);
  }
  if (err < 0) {
    *out = NULL;
    atomic_store(&u->refs, 1);
    gev__udp_unref(u);
    return err;
  }
  return 0;
}

int gev_udp_new(gev_udp **out, gev_loop *l, const gev_udp_handler *h,
                const gev_udp_options *opt)
{
  gev__addr a;
  int err;

  if (out)
    *out = NULL;
  if (!opt)
    return -EINVAL;
  if (opt->address && (err = gev__addr_parse(opt->address, &a)) < 0)
    return err;
  return gev__udp_new_at(out, l, h, opt, opt->address ? &a : NULL);
}

/* A socket still NEW is closed by its start task, which sees `closed`:
 * the start task holds the loop's reference, which CLOSED drops. */
static void close_task(void *arg)
{
  gev_udp *u = arg;

  if (u->state != GEV__US_NEW)
    gev__udp_move(u, GEV__UE_CLOSE);
  gev__udp_unref(u);
}

int gev_udp_close(gev_udp *u)
{
  bool was;

  if (!u)
    return -EINVAL;
  pthread_mutex_lock(&u->mu);
  was = atomic_exchange(&u->closed, true);
  pthread_mutex_unlock(&u->mu);
  if (was)
    return -EALREADY;
  if (atomic_load(&u->detached))
    return 0; /* the loop is done with it: closed already */
  gev__udp_ref(u);
  /* The task keeps the close in order with the caller's other tasks. A
   * stopped loop closed the socket itself; out of memory, after_pass
   * closes it (a socket not started yet is closed by its start task,
   * which sees `closed`). */
  if (gev__loop_call_or_schedule(u->l, close_task, u, unref_task, &u->handle) <
      0)
    gev__udp_unref(u);
  return 0;
}

void gev_udp_free(gev_udp *u)
{
  if (!u)
    return;
  gev_udp_close(u);
  gev__udp_unref(u);
}

/* ---- sending ---------------------------------------------------------- */

static void inbox_task(void *arg)
{
  gev_udp *u = arg;
  gev__udp_q taken;

  pthread_mutex_lock(&u->mu);
  taken = u->inbox;
  if (!taken.head)
    taken.tail = &taken.head;
  gev__udp_q_init(&u->inbox);
  u->inbox_posted = false;
  /* Counted as queued before the inbox's count is gone, so that senders
   * never see neither: a publication while they move (the batch's
   * push-back) adds them, the flush publishes the exact figure. */
  atomic_fetch_add_explicit(&u->q_bytes, taken.bytes, memory_order_relaxed);
  pthread_mutex_unlock(&u->mu);
  if (u->state < GEV__US_CLOSING && taken.head) {
    u->moving = taken.bytes;
    gev__udp_flush_batch_of(u); /* what the loop sent before goes first */
    for (gev__udp_pkt *k = taken.head; k; k = k->next)
      gev__udp_count(u, GEV__UC_QUEUED, 1);
    gev__udp_q_splice(&u->q, &taken);
    u->moving = 0;
    gev__udp_flush_queue(u);
  }
  dropped(u, gev__udp_q_free(&taken));
  gev__udp_unref(u);
}

/* From another thread (or before the start): into the inbox, and one task
 * per batch of such sends takes it to the loop. The task is posted under
 * the socket's mutex (its order: u->mu, then the loop's), which keeps the
 * inbox non-empty exactly while a task for it is queued: a send whose post
 * fails (no memory, loop stopped) is refused, and no other thread's can
 * join the inbox meanwhile, to wait there with no task to carry it. */
static int send_cross(gev_udp *u, const struct sockaddr *to, socklen_t to_len,
                      const gev__udp_src *from, const void *p, size_t n)
{
  gev__udp_pkt *k = gev__udp_pkt_new(to, to_len, from, p, n);
  bool refused_post = false;
  int err = 0;

  if (!k)
    return -ENOMEM;
  pthread_mutex_lock(&u->mu);
  if (atomic_load(&u->closed))
    err = -ENOTCONN;
  else if (u->inbox.bytes + atomic_load(&u->q_bytes) + n > u->queue_max)
    err = -ENOBUFS;
  if (!err && !u->inbox_posted) {
    gev__udp_ref(u); /* the task's */
    err = gev__loop_post_owned(u->l, inbox_task, u, unref_task);
    refused_post = err < 0;
    if (err == -ESHUTDOWN)
      err = -ENOTCONN; /* the loop has stopped: it closes the socket */
    u->inbox_posted = !refused_post;
  }
  if (!err) {
    *u->inbox.tail = k;
    u->inbox.tail = &k->next;
    u->inbox.bytes += n;
  }
  pthread_mutex_unlock(&u->mu);
  if (refused_post)
    gev__udp_unref(u); /* the caller holds one more: never the last */
  if (err)
    free(k);
  return err;
}

static int check_send(gev_udp *u, const struct sockaddr *to, socklen_t to_len,
                      const void *p, size_t n)
{
  if (!u || (!p && n))
    return -EINVAL;
  if (n > GEV_UDP_MAX_DATAGRAM)
    return -EMSGSIZE;
  if (atomic_load(&u->closed))
    return -ENOTCONN;
  if (!to)
    return atomic_load(&u->connected) ? 0 : -EDESTADDRREQ;
  if (to_len < sizeof(sa_family_t) || to_len > sizeof(struct sockaddr_storage))
    return -EINVAL;
  return 0;
}

static int send_from(gev_udp *u, const struct sockaddr *to, socklen_t to_len,
                     const gev__udp_src *from, const void *p, size_t n)
{
  int err = check_send(u, to, to_len, p, n);

  if (err < 0)
    return err;
  if (!gev_loop_in_thread(u->l) || u->state != GEV__US_OPEN)
    return send_cross(u, to, to_len, from, p, n);
  if (u->q.bytes + n > u->queue_max && u->q.head)
    return -ENOBUFS;
  return gev__udp_send_in_loop(u, to, to_len, from, p, n);
}

int gev_udp_send_to(gev_udp *u, const struct sockaddr *to, socklen_t to_len,
                    const void *p, size_t n)
{
  return send_from(u, to, to_len, NULL, p, n);
}

/* d->local as a source: the socket's own family (an IPv6 socket may
 * have received from an IPv4-mapped address: that is AF_INET6 too). */
static int src_of(const gev_udp *u, const gev_udp_datagram *d,
                  gev__udp_src *out)
{
  *out = (gev__udp_src){0};
  if (!d->local || !d->local_len)
    return 0; /* not known: the kernel's choice */
  if (d->local->sa_family != u->family)
    return -EINVAL;
  /* No datagram may leave from a group: a reply to one sent there leaves
   * from the kernel's choice. (A broadcast's local is already the
   * interface's address: udp-io.c's local_of.) */
  if (u->family == AF_INET && d->local_len >= sizeof(struct sockaddr_in)) {
    struct in_addr a = ((const struct sockaddr_in *)d->local)->sin_addr;
    if (IN_MULTICAST(ntohl(a.s_addr)))
      return 0;
    out->family = AF_INET;
    out->a.v4 = a;
    return 0;
  }
  if (u->family == AF_INET6 && d->local_len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)d->local;
    if (IN6_IS_ADDR_MULTICAST(&a->sin6_addr))
      return 0;
    out->family = AF_INET6;
    out->a.v6 = a->sin6_addr;
    out->ifindex = a->sin6_scope_id;
    return 0;
  }
  return -EINVAL;
}

int gev_udp_reply(gev_udp *u, const gev_udp_datagram *d, const void *p,
                  size_t n)
{
  gev__udp_src from;
  int err;

  if (!u || !d)
    return -EINVAL;
  if (!d->peer || !d->peer_len)
    return -EDESTADDRREQ;
  if ((err = src_of(u, d, &from)) < 0)
    return err;
  return send_from(u, d->peer, d->peer_len, from.family ? &from : NULL, p, n);
}

int gev_udp_send(gev_udp *u, const void *p, size_t n)
{
  return gev_udp_send_to(u, NULL, 0, p, n);
}

/* ---- accessors -------------------------------------------------------- */

int gev_udp_port(const gev_udp *u)
{
  return u && atomic_load(&u->fd_pub) >= 0 ? u->port : 0;
}

int gev_udp_fd(const gev_udp *u)
{
  return u ? atomic_load(&u->fd_pub) : -1;
}

gev_loop *gev_udp_loop(const gev_udp *u)
{
  return u ? u->l : NULL;
}

void *gev_udp_user_data(const gev_udp *u)
{
  return u ? u->user_data : NULL;
}

int gev_udp_get_stats(const gev_udp *u, gev_udp_stats *out)
{
  uint64_t v[GEV__UC_COUNT];

  if (!u || !out)
    return -EINVAL;
  for (int i = 0; i < GEV__UC_COUNT; i++)
    v[i] = atomic_load_explicit(&u->st[i], memory_order_relaxed);
  *out = (gev_udp_stats){
      .datagrams_in = v[GEV__UC_DGRAMS_IN],
      .bytes_in = v[GEV__UC_BYTES_IN],
      .datagrams_out = v[GEV__UC_DGRAMS_OUT],
      .bytes_out = v[GEV__UC_BYTES_OUT],
      .truncated = v[GEV__UC_TRUNCATED],
      .recv_calls = v[GEV__UC_RECV_CALLS],
      .send_calls = v[GEV__UC_SEND_CALLS],
      .send_errors = v[GEV__UC_SEND_ERRORS],
      .queued = v[GEV__UC_QUEUED],
      .errors = v[GEV__UC_ERRORS],
      .dropped = v[GEV__UC_DROPPED],
  };
  return 0;
}
