/* udp-io.c - the hot path of datagram sockets: recvmmsg into the loop's
 * buffers, one outgoing batch per loop sent with sendmmsg, and the send
 * queue for what the kernel pushes back. The loop's thread only.
 *
 * The buffers belong to the loop, not to a socket: only one socket reads
 * at a time, so every socket of a loop shares GEV_UDP_BATCH_MAX slots of
 * GEV_UDP_MAX_DATAGRAM bytes (4 MiB of address space, touched only as far
 * as datagrams fill them) and one outgoing batch. They are found through
 * the thread: a loop runs in one thread, and the thread remembers the
 * buffers of the loop it runs, so the loop itself keeps nothing of UDP. */
#include "udp-internal.h"
#include "log-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* recvmmsg calls per wake-up while each fills the batch: more datagrams
 * per epoll_wait under load, bounded so other fds and timers still run. */
#define READ_ROUNDS 4
#define CTL_SPACE                                                              \
  (CMSG_SPACE(sizeof(struct in6_pktinfo)) +                                    \
   CMSG_SPACE(sizeof(struct in_pktinfo)))

struct gev__udp_ctx {
  gev_loop *l;
  int refs; /* sockets of this loop holding it */

  struct mmsghdr rmsg[GEV_UDP_BATCH_MAX];
  struct iovec riov[GEV_UDP_BATCH_MAX];
  struct sockaddr_storage rname[GEV_UDP_BATCH_MAX];
  _Alignas(struct cmsghdr) unsigned char rctl[GEV_UDP_BATCH_MAX][CTL_SPACE];
  unsigned char *rbuf; /* GEV_UDP_BATCH_MAX slots */
  /* recvmmsg writes msg_namelen, msg_controllen and msg_flags of the
   * slots it fills: only those (the first `rdirty`) are reset before the
   * next call, not the whole batch, as long as the control buffers are
   * the same (`rpktinfo`: whether they are set). */
  int rdirty;
  bool rpktinfo;

  /* The socket whose poll callback runs: it sends its batch at the end,
   * so its replies need no after-pass call. */
  gev_udp *reading;
  /* The outgoing batch: owner's datagrams, payloads in the arena. */
  gev_udp *owner;
  int nsend;
  size_t arena_used; /* = the batch's bytes: payloads are packed */
  struct mmsghdr smsg[GEV_UDP_BATCH_MAX];
  struct iovec siov[GEV_UDP_BATCH_MAX];
  struct sockaddr_storage sname[GEV_UDP_BATCH_MAX];
  /* gev_udp_reply's source per slot, as control data; with_src: some
   * slot of the batch has one (cleared when the batch is sent, so other
   * datagrams leave without touching these). */
  gev__udp_src sfrom[GEV_UDP_BATCH_MAX];
  bool with_src;
  _Alignas(struct cmsghdr) unsigned char sctl[GEV_UDP_BATCH_MAX][CTL_SPACE];
  unsigned char *arena;
};

static _Thread_local gev__udp_ctx *tls_ctx;

gev__udp_ctx *gev__udp_ctx_new(void)
{
  gev__udp_ctx *c = calloc(1, sizeof(*c));

  if (!c)
    return NULL;
  c->rbuf = malloc((size_t)GEV_UDP_BATCH_MAX * GEV_UDP_MAX_DATAGRAM);
  c->arena = malloc(GEV__UDP_ARENA);
  if (!c->rbuf || !c->arena) {
    gev__udp_ctx_free(c);
    return NULL;
  }
  for (int i = 0; i < GEV_UDP_BATCH_MAX; i++) {
    c->riov[i].iov_base = c->rbuf + (size_t)i * GEV_UDP_MAX_DATAGRAM;
    c->riov[i].iov_len = GEV_UDP_MAX_DATAGRAM;
    c->rmsg[i].msg_hdr.msg_iov = &c->riov[i];
    c->rmsg[i].msg_hdr.msg_iovlen = 1;
    c->rmsg[i].msg_hdr.msg_name = &c->rname[i];
    c->smsg[i].msg_hdr.msg_iov = &c->siov[i];
    c->smsg[i].msg_hdr.msg_iovlen = 1;
  }
  c->rdirty = GEV_UDP_BATCH_MAX;
  return c;
}

void gev__udp_ctx_free(gev__udp_ctx *c)
{
  if (!c)
    return;
  free(c->rbuf);
  free(c->arena);
  free(c);
}

gev__udp_ctx *gev__udp_ctx_get(gev_loop *l, gev__udp_ctx **spare)
{
  gev__udp_ctx *c = tls_ctx;

  if (c && c->l == l) {
    c->refs++;
    gev__udp_ctx_free(*spare);
  } else {
    c = *spare;
    c->l = l;
    c->refs = 1;
    tls_ctx = c; /* a nested loop's buffers replace these here; fine */
  }
  *spare = NULL;
  return c;
}

void gev__udp_ctx_put(gev__udp_ctx *c)
{
  if (!c || --c->refs > 0)
    return;
  if (tls_ctx == c)
    tls_ctx = NULL;
  gev__udp_ctx_free(c);
}

/* ---- the send queue ---------------------------------------------------- */

gev__udp_pkt *gev__udp_pkt_new(const struct sockaddr *to, socklen_t to_len,
                               const gev__udp_src *from, const void *p,
                               size_t n)
{
  gev__udp_pkt *k = malloc(sizeof(*k) + n);

  if (!k)
    return NULL;
  k->next = NULL;
  k->from.family = 0;
  if (from)
    k->from = *from;
  k->to_len = to ? to_len : 0;
  if (to)
    memcpy(&k->to, to, to_len);
  k->len = n;
  if (n)
    memcpy(k->data, p, n);
  return k;
}

static void q_push(gev__udp_q *q, gev__udp_pkt *k)
{
  *q->tail = k;
  q->tail = &k->next;
  q->bytes += k->len;
}

static gev__udp_pkt *q_pop(gev__udp_q *q)
{
  gev__udp_pkt *k = q->head;

  q->head = k->next;
  if (!q->head)
    q->tail = &q->head;
  q->bytes -= k->len;
  return k;
}

void gev__udp_q_splice(gev__udp_q *to, gev__udp_q *from)
{
  if (!from->head)
    return;
  *to->tail = from->head;
  to->tail = from->tail;
  to->bytes += from->bytes;
  gev__udp_q_init(from);
}

uint64_t gev__udp_q_free(gev__udp_q *q)
{
  uint64_t n = 0;

  while (q->head) {
    free(q_pop(q));
    n++;
  }
  return n;
}

static void publish_q(gev_udp *u)
{
  atomic_store_explicit(&u->q_bytes, u->q.bytes + u->moving,
                        memory_order_relaxed);
}

/* Whether EPOLLOUT means the head of the queue may go now. Not on an
 * unconnected unix socket: its poll reports it writable whatever the
 * queue of the peer that refused (EAGAIN) holds, so waiting for EPOLLOUT
 * would spin, one sendmmsg per wake-up, until that peer reads. */
static bool write_wakes(const gev_udp *u)
{
  return u->family != AF_UNIX || atomic_load(&u->connected) || u->retry_failed;
}

int gev__udp_watch(gev_udp *u)
{
  unsigned want = 0;

  if (u->state == GEV__US_OPEN)
    want |= GEV__EV_READ;
  if (u->q.head && u->state < GEV__US_CLOSING && write_wakes(u))
    want |= GEV__EV_WRITE;
  return gev__loop_io_set(u->l, &u->io, want);
}

static void retry_due(void *arg)
{
  gev_udp *u = arg;

  u->retry = 0;
  if (u->q.head && u->state < GEV__US_CLOSING)
    gev__udp_flush_queue(u); /* arms the next retry if still refused */
  gev__udp_unref(u);
}

static void arm_retry(gev_udp *u)
{
  if (u->retry)
    return;
  u->retry_ms = !u->retry_ms ? 1 : u->retry_ms >= 64 ? 64 : u->retry_ms * 2;
  gev__udp_ref(u);
  if (!(u->retry = gev_loop_run_after(u->l, u->retry_ms, retry_due, u))) {
    gev__udp_unref(u);
    u->retry_failed = true; /* spinning beats stalling */
  }
}

void gev__udp_retry_cancel(gev_udp *u)
{
  if (u->retry) {
    gev_loop_cancel(u->l, u->retry);
    u->retry = 0;
    gev__udp_unref(u); /* not the last: the loop's ref lasts to CLOSED */
  }
}

/* The queue changed here, where nothing may close the socket: a poller
 * failure is recorded and udp.c's after-pass call acts on it. */
static void rewatch(gev_udp *u)
{
  int err;

  if (u->q.head && u->state < GEV__US_CLOSING && !write_wakes(u))
    arm_retry(u);
  err = gev__udp_watch(u);

  if (err < 0 && u->state < GEV__US_CLOSING && !u->io_err) {
    u->io_err = err;
    gev__handle_schedule(&u->handle);
  }
}

/* A refused datagram is dropped; the first error of a pass goes to
 * on_error after the pass (not inside the gev_udp_send_to that flushed). */
static void send_failed(gev_udp *u, int err)
{
  gev__udp_count(u, GEV__UC_SEND_ERRORS, 1);
  if (!u->pending_err) {
    u->pending_err = err;
    gev__handle_schedule(&u->handle);
  }
}

static bool pushed_back(int err)
{
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

static void sent(gev_udp *u, int n, size_t bytes)
{
  gev__udp_count(u, GEV__UC_DGRAMS_OUT, (uint64_t)n);
  gev__udp_count(u, GEV__UC_BYTES_OUT, bytes);
  u->l->st.v[GEV__S_BYTES_WRITTEN] += bytes;
  u->l->st.v[GEV__S_DGRAMS_OUT] += (uint64_t)n;
  u->l->st.v[GEV__S_DGRAM_BYTES_OUT] += bytes;
}

/* The control data that makes a datagram leave from s (ipi_spec_dst,
 * ipi6_addr: the source address; no interface forced but an IPv6 scope);
 * its length, 0 for the kernel's choice. */
static socklen_t src_cmsg(const gev__udp_src *s, unsigned char *buf)
{
  struct msghdr h = {.msg_control = buf, .msg_controllen = CTL_SPACE};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&h);

  if (s->family)
    memset(buf, 0, CTL_SPACE); /* the padding goes to the kernel too */
  if (s->family == AF_INET) {
    struct in_pktinfo pi = {.ipi_spec_dst = s->a.v4};
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
    return CMSG_SPACE(sizeof(pi));
  }
  if (s->family == AF_INET6) {
    struct in6_pktinfo pi = {.ipi6_addr = s->a.v6, .ipi6_ifindex = s->ifindex};
    cm->cmsg_level = IPPROTO_IPV6;
    cm->cmsg_type = IPV6_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
    return CMSG_SPACE(sizeof(pi));
  }
  return 0;
}

/* One sendmmsg from the queue's head, up to a batch; false when the
 * kernel pushed back. */
static bool flush_some(gev_udp *u)
{
  struct mmsghdr m[GEV_UDP_BATCH_MAX];
  struct iovec iov[GEV_UDP_BATCH_MAX];
  _Alignas(struct cmsghdr) unsigned char ctl[GEV_UDP_BATCH_MAX][CTL_SPACE];
  gev__udp_pkt *k = u->q.head;
  int n = 0, r;
  size_t bytes = 0;

  for (; k && n < u->batch; k = k->next, n++) {
    socklen_t cl = src_cmsg(&k->from, ctl[n]);
    iov[n] = (struct iovec){k->data, k->len};
    m[n].msg_hdr = (struct msghdr){.msg_name = k->to_len ? &k->to : NULL,
                                   .msg_namelen = k->to_len,
                                   .msg_iov = &iov[n],
                                   .msg_iovlen = 1,
                                   .msg_control = cl ? ctl[n] : NULL,
                                   .msg_controllen = cl};
  }
  gev__udp_count(u, GEV__UC_SEND_CALLS, 1);
  r = gev__sys_sendmmsg(u->io.fd, m, (unsigned)n);
  if (r < 0) {
    if (errno == EINTR)
      return true;
    if (pushed_back(errno))
      return false;
    send_failed(u, -errno);
    free(q_pop(&u->q));
    return true;
  }
  for (int i = 0; i < r; i++) {
    bytes += u->q.head->len;
    free(q_pop(&u->q));
  }
  sent(u, r, bytes);
  return true;
}

/* An unconnected unix socket's EAGAIN is one peer's full queue, not the
 * socket's: datagrams to other peers go on, each peer's in order (one
 * that refused gets nothing after it this round). One sendmmsg of one
 * datagram each; this runs only while some peer refuses. At most
 * BLOCKED_MAX refusing peers are stepped around per round. */
#define BLOCKED_MAX 8

static gev__udp_pkt *q_unlink(gev__udp_q *q, gev__udp_pkt **pp)
{
  gev__udp_pkt *k = *pp;

  *pp = k->next;
  if (q->tail == &k->next)
    q->tail = pp;
  q->bytes -= k->len;
  return k;
}

static bool same_peer(const gev__udp_pkt *a, const gev__udp_pkt *b)
{
  return a->to_len == b->to_len && memcmp(&a->to, &b->to, a->to_len) == 0;
}

static void flush_around(gev_udp *u)
{
  const gev__udp_pkt *blocked[BLOCKED_MAX];
  gev__udp_pkt **pp = &u->q.head;
  int nb = 0;

  while (*pp) {
    gev__udp_pkt *k = *pp;
    bool skip = false;

    for (int i = 0; i < nb && !skip; i++)
      skip = same_peer(blocked[i], k);
    if (skip) {
      pp = &k->next;
      continue;
    }
    struct iovec iov = {k->data, k->len};
    struct mmsghdr m = {.msg_hdr = {.msg_name = &k->to,
                                    .msg_namelen = k->to_len,
                                    .msg_iov = &iov,
                                    .msg_iovlen = 1}};
    gev__udp_count(u, GEV__UC_SEND_CALLS, 1);
    if (gev__sys_sendmmsg(u->io.fd, &m, 1) == 1) {
      sent(u, 1, k->len);
      free(q_unlink(&u->q, pp));
    } else if (errno == EINTR) {
      continue;
    } else if (pushed_back(errno)) {
      if (nb == BLOCKED_MAX)
        break;
      blocked[nb++] = k;
      pp = &k->next;
    } else {
      send_failed(u, -errno);
      free(q_unlink(&u->q, pp));
    }
  }
}

void gev__udp_flush_queue(gev_udp *u)
{
  while (u->q.head && flush_some(u))
    ;
  if (u->q.head && !write_wakes(u))
    flush_around(u);
  if (!u->q.head) { /* all out: the next pushback starts its retries anew */
    u->retry_ms = 0;
    u->retry_failed = false;
  }
  publish_q(u);
  rewatch(u);
  if (!u->q.head && u->state == GEV__US_DRAINING)
    gev__handle_schedule(&u->handle); /* udp.c closes it after the pass */
}

/* ---- the outgoing batch ------------------------------------------------ */

/* What the kernel did not take goes to the queue, in order; so does the
 * whole batch when the queue already holds earlier datagrams. */
static void batch_to_queue(gev_udp *u, gev__udp_ctx *c, int from)
{
  for (int i = from; i < c->nsend; i++) {
    struct msghdr *h = &c->smsg[i].msg_hdr;
    gev__udp_pkt *k = gev__udp_pkt_new(h->msg_name, h->msg_namelen,
                                       h->msg_control ? &c->sfrom[i] : NULL,
                                       c->siov[i].iov_base, c->siov[i].iov_len);
    if (!k) {
      send_failed(u, -ENOMEM);
      continue;
    }
    q_push(&u->q, k);
    gev__udp_count(u, GEV__UC_QUEUED, 1);
  }
  publish_q(u);
  rewatch(u);
}

static void flush_batch(gev__udp_ctx *c)
{
  gev_udp *u = c->owner;
  int i = 0, r;

  while (i < c->nsend && !u->q.head) {
    gev__udp_count(u, GEV__UC_SEND_CALLS, 1);
    r = gev__sys_sendmmsg(u->io.fd, c->smsg + i, (unsigned)(c->nsend - i));
    if (r > 0) {
      /* The payloads are packed in the arena, in order. */
      size_t end =
          i + r < c->nsend
              ? (size_t)((unsigned char *)c->siov[i + r].iov_base - c->arena)
              : c->arena_used;
      sent(u, r,
           end - (size_t)((unsigned char *)c->siov[i].iov_base - c->arena));
      i += r;
    } else if (errno == EINTR) {
      continue;
    } else if (pushed_back(errno)) {
      break;
    } else {
      send_failed(u, -errno);
      i++; /* that one datagram is refused; the rest may go */
    }
  }
  if (i < c->nsend) {
    batch_to_queue(u, c, i);
    if (!write_wakes(u))
      gev__udp_flush_queue(u); /* one peer refused: the others go now */
  }
  for (int j = 0; c->with_src && j < c->nsend; j++) {
    c->smsg[j].msg_hdr.msg_control = NULL;
    c->smsg[j].msg_hdr.msg_controllen = 0;
  }
  c->with_src = false;
  c->nsend = 0;
  c->arena_used = 0;
  c->owner = NULL;
}

void gev__udp_flush_batch_of(gev_udp *u)
{
  if (u->ctx && u->ctx->owner == u && u->ctx->nsend)
    flush_batch(u->ctx);
}

/* Into the batch, which is u's and has room. */
static inline int append(gev__udp_ctx *c, const struct sockaddr *to,
                         socklen_t to_len, const gev__udp_src *from,
                         const void *p, size_t n)
{
  int i = c->nsend++;
  struct msghdr *h = &c->smsg[i].msg_hdr;

  if (from) { /* a slot's control data lasts until the batch is sent */
    c->sfrom[i] = *from;
    h->msg_controllen = src_cmsg(from, c->sctl[i]);
    h->msg_control = c->sctl[i];
    c->with_src = true;
  }

  if (n)
    memcpy(c->arena + c->arena_used, p, n);
  c->siov[i] = (struct iovec){c->arena + c->arena_used, n};
  c->arena_used += n;
  h->msg_name = to ? &c->sname[i] : NULL;
  h->msg_namelen = to ? to_len : 0;
  /* The common sizes as fixed-size copies (inlined), not a memcpy call. */
  if (to && to_len == sizeof(struct sockaddr_in))
    memcpy(&c->sname[i], to, sizeof(struct sockaddr_in));
  else if (to && to_len == sizeof(struct sockaddr_in6))
    memcpy(&c->sname[i], to, sizeof(struct sockaddr_in6));
  else if (to)
    memcpy(&c->sname[i], to, to_len);
  return 0;
}

/* Behind a queue, a batch of another socket's or a full one to send
 * first, or the first datagram of a batch: out of the fast path's way. */
static __attribute__((noinline)) int
send_slow(gev_udp *u, const struct sockaddr *to, socklen_t to_len,
          const gev__udp_src *from, const void *p, size_t n)
{
  gev__udp_ctx *c = u->ctx;

  if (u->q.head) { /* behind what waits, to keep the order */
    gev__udp_pkt *k = gev__udp_pkt_new(to, to_len, from, p, n);
    if (!k)
      return -ENOMEM;
    q_push(&u->q, k);
    gev__udp_count(u, GEV__UC_QUEUED, 1);
    publish_q(u);
    return 0;
  }
  if (c->nsend && (c->owner != u || c->nsend == GEV_UDP_BATCH_MAX ||
                   c->arena_used + n > GEV__UDP_ARENA))
    flush_batch(c);
  if (u->q.head) /* that flush was pushed back: queue behind it */
    return send_slow(u, to, to_len, from, p, n);
  if (c->nsend == 0 && c->reading != u)
    gev__handle_schedule(&u->handle); /* sent after the pass at the latest */
  c->owner = u;
  return append(c, to, to_len, from, p, n);
}

int gev__udp_send_in_loop(gev_udp *u, const struct sockaddr *to,
                          socklen_t to_len, const gev__udp_src *from,
                          const void *p, size_t n)
{
  gev__udp_ctx *c = u->ctx;

  /* owner == u: the batch is u's and not empty (a flush clears owner). */
  if (c->owner == u && c->nsend < GEV_UDP_BATCH_MAX &&
      c->arena_used + n <= GEV__UDP_ARENA && !u->q.head)
    return append(c, to, to_len, from, p, n);
  return send_slow(u, to, to_len, from, p, n);
}

/* ---- reading ---------------------------------------------------------- */

/* The destination address of a datagram, from its IP_PKTINFO or
 * IPV6_PKTINFO, with the socket's port. */
static socklen_t local_of(const gev_udp *u, struct msghdr *h,
                          struct sockaddr_storage *out)
{
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
    if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
      struct sockaddr_in *a = (struct sockaddr_in *)out;
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
      /* A broadcast was not sent to one of this host's addresses: the
       * one of the interface it came in on (ipi_spec_dst) is what was
       * asked, and what a reply may leave from. A group stays itself. */
      if (!IN_MULTICAST(ntohl(pi.ipi_addr.s_addr)) &&
          pi.ipi_addr.s_addr != pi.ipi_spec_dst.s_addr)
        pi.ipi_addr = pi.ipi_spec_dst;
      *a = (struct sockaddr_in){.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)u->port),
                                .sin_addr = pi.ipi_addr};
      return sizeof(*a);
    }
    if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
      *a = (struct sockaddr_in6){.sin6_family = AF_INET6,
                                 .sin6_port = htons((uint16_t)u->port),
                                 .sin6_addr = pi.ipi6_addr};
      if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
        a->sin6_scope_id = (uint32_t)pi.ipi6_ifindex;
      return sizeof(*a);
    }
  }
  return 0;
}

static void deliver(gev_udp *u, gev__udp_ctx *c, int i)
{
  struct msghdr *h = &c->rmsg[i].msg_hdr;
  struct sockaddr_storage local;
  gev_udp_datagram d = {
      .data = c->riov[i].iov_base,
      .len = c->rmsg[i].msg_len,
      .truncated = (h->msg_flags & MSG_TRUNC) != 0,
      .peer = (const struct sockaddr *)&c->rname[i],
      /* An unnamed unix sender has only its family, or nothing. */
      .peer_len = h->msg_namelen > sizeof(sa_family_t) ? h->msg_namelen : 0,
  };

  if (u->pktinfo && (d.local_len = local_of(u, h, &local)) > 0)
    d.local = (const struct sockaddr *)&local;
  if (d.truncated) {
    gev__udp_count(u, GEV__UC_TRUNCATED, 1);
    u->l->st.v[GEV__S_DGRAMS_TRUNCATED]++;
  }
  if (u->h.on_datagram)
    u->h.on_datagram(u, &d);
}

static void report(gev_udp *u, int err)
{
  gev__udp_count(u, GEV__UC_ERRORS, 1);
  if (u->h.on_error)
    u->h.on_error(u, err);
}

/* The slots the last call filled (or all, when the control buffers
 * change) get their lengths back. */
static void reset_slots(const gev_udp *u, gev__udp_ctx *c)
{
  int n = c->rdirty;

  if (u->pktinfo != c->rpktinfo) {
    c->rpktinfo = u->pktinfo;
    n = GEV_UDP_BATCH_MAX;
  }
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &c->rmsg[i].msg_hdr;
    h->msg_namelen = sizeof(c->rname[i]);
    h->msg_control = c->rpktinfo ? c->rctl[i] : NULL;
    h->msg_controllen = c->rpktinfo ? CTL_SPACE : 0;
    h->msg_flags = 0;
  }
  c->rdirty = 0;
}

/* One recvmmsg and its callbacks; the number read, 0 when nothing was
 * there, -1 after an error (reported: the call consumed it). The counters
 * move once per call. */
static int read_once(gev_udp *u, gev__udp_ctx *c)
{
  size_t bytes = 0;
  int n;

  reset_slots(u, c);
  gev__udp_count(u, GEV__UC_RECV_CALLS, 1);
  n = gev__sys_recvmmsg(u->io.fd, c->rmsg, (unsigned)u->batch);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return 0;
    report(u, -errno);
    return -1;
  }
  c->rdirty = n;
  for (int i = 0; i < n; i++)
    bytes += c->rmsg[i].msg_len;
  gev__udp_count(u, GEV__UC_DGRAMS_IN, (uint64_t)n);
  gev__udp_count(u, GEV__UC_BYTES_IN, bytes);
  u->l->st.v[GEV__S_BYTES_READ] += bytes;
  u->l->st.v[GEV__S_DGRAMS_IN] += (uint64_t)n;
  u->l->st.v[GEV__S_DGRAM_BYTES_IN] += bytes;
  for (int i = 0; i < n && u->state == GEV__US_OPEN; i++)
    deliver(u, c, i);
  return n;
}

/* An error the poller reports on a socket that does not read (draining):
 * taking it clears it, so the poller does not report it again. */
static void take_error(gev_udp *u)
{
  int err = 0;
  socklen_t len = sizeof(err);

  if (getsockopt(u->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
    report(u, -err);
}

void gev__udp_io_cb(gev__io *io, unsigned events)
{
  gev_udp *u = (gev_udp *)io;
  gev__udp_ctx *c = u->ctx;
  gev_udp *outer = c->reading;

  c->reading = u;
  if ((events & GEV__EV_WRITE) && u->q.head)
    gev__udp_flush_queue(u);
  if (u->state == GEV__US_OPEN && (events & (GEV__EV_READ | GEV__EV_ERROR))) {
    for (int r = 0; r < READ_ROUNDS && u->state == GEV__US_OPEN; r++) {
      int n = read_once(u, c);
      if (n >= 0 && n < u->batch)
        break; /* drained; an error is consumed: read again */
    }
  } else if ((events & GEV__EV_ERROR) && u->state < GEV__US_CLOSING) {
    take_error(u);
  }
  c->reading = outer;
  gev__udp_flush_batch_of(u);
}
