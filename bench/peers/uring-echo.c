/* uring-echo - what fewer syscalls buy: an echo server on io_uring
 * (liburing), written to make one system call per echoed message.
 *
 * Not a library peer: a yardstick next to the epoll baseline, for the step
 * the epoll design cannot take (3 syscalls per message: wait, read, write).
 * Per connection one operation chain is in flight at a time: a recv into
 * the connection's buffer; when it completes, a send of what arrived
 * (MSG_WAITALL: the kernel finishes a short send itself, and holds the
 * chain while the peer does not read, which is the backpressure) linked to
 * the next recv. The send posts no completion when it succeeds
 * (IOSQE_CQE_SKIP_SUCCESS), so one io_uring_enter submits the pair and
 * sleeps until the next recv completes. Accepts are one multishot accept;
 * the stop eventfd is one more read. */
#include "peer.h"

#include <errno.h>
#include <liburing.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING_ENTRIES 4096

enum { OP_ACCEPT = 1, OP_STOP, OP_RECV, OP_SEND };

typedef struct conn {
  int fd;
  int inflight; /* operations submitted and not yet completed */
  int closing;
  char buf[PEER_BUF_SIZE];
} conn;

typedef struct loop {
  struct io_uring ring;
  int lfd, stopfd;
  uint64_t stopval;
  int ring_ok;
} loop;

/* user_data: the connection pointer with the operation in the low bits
 * (conn is malloc'd: 16-byte aligned). */
static uint64_t tag(void *p, int op)
{
  return (uint64_t)(uintptr_t)p | (uint64_t)op;
}

static struct io_uring_sqe *sqe_get(loop *l)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
  if (!sqe) { /* full: hand what is queued to the kernel first */
    io_uring_submit(&l->ring);
    sqe = io_uring_get_sqe(&l->ring);
  }
  return sqe;
}

static void arm_accept(loop *l)
{
  struct io_uring_sqe *sqe = sqe_get(l);
  io_uring_prep_multishot_accept(sqe, l->lfd, NULL, NULL,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, tag(NULL, OP_ACCEPT));
}

static void arm_recv(loop *l, conn *c, unsigned flags)
{
  struct io_uring_sqe *sqe = sqe_get(l);
  io_uring_prep_recv(sqe, c->fd, c->buf, sizeof(c->buf), 0);
  sqe->flags |= flags;
  io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
  c->inflight++;
}

static void conn_done(conn *c)
{
  c->closing = 1;
  if (c->inflight == 0) {
    close(c->fd);
    free(c);
  }
}

static void on_accept(loop *l, int res, unsigned cflags)
{
  if (!(cflags & IORING_CQE_F_MORE))
    arm_accept(l); /* the multishot accept ended (error or overflow) */
  if (res < 0)
    return;
  peer_nodelay(res);
  conn *c = malloc(sizeof(conn)); /* 16-byte aligned on glibc */
  if (!c) {
    close(res);
    return;
  }
  c->fd = res;
  c->inflight = 0;
  c->closing = 0;
  arm_recv(l, c, 0);
}

static void on_recv(loop *l, conn *c, int res)
{
  struct io_uring_sqe *sqe;

  c->inflight--;
  if (res <= 0 || c->closing) { /* EOF, error, or cancelled by a failed send */
    if (res == -ECANCELED && !c->closing)
      return; /* the send's own completion reports its failure */
    conn_done(c);
    return;
  }
  sqe = sqe_get(l);
  io_uring_prep_send(sqe, c->fd, c->buf, (size_t)res,
                     MSG_NOSIGNAL | MSG_WAITALL);
  sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
  io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
  c->inflight++;
  arm_recv(l, c, 0);
}

static void on_send(conn *c, int res)
{
  /* Only failures complete (success is skipped); the linked recv then
   * completes with -ECANCELED. */
  (void)res;
  c->inflight--;
  conn_done(c);
}

static void *create(int index, int lfd)
{
  loop *l = calloc(1, sizeof(*l));

  (void)index;
  if (!l)
    return NULL;
  l->lfd = lfd;
  l->stopfd = eventfd(0, EFD_CLOEXEC);
  if (l->stopfd < 0) {
    free(l);
    return NULL;
  }
  return l;
}

/* In the loop's thread: SINGLE_ISSUER binds the ring to the task that
 * creates it. With DEFER_TASKRUN, completion work runs when this thread
 * waits, not as an interrupt to whatever it does. Older kernels refuse
 * these flags: then plain. */
static int ring_init(loop *l)
{
  struct io_uring_params p = {0};

  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = 2 * RING_ENTRIES;
  if (io_uring_queue_init_params(RING_ENTRIES, &l->ring, &p) == 0)
    return 0;
  p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE,
                               .cq_entries = 2 * RING_ENTRIES};
  return io_uring_queue_init_params(RING_ENTRIES, &l->ring, &p);
}

static void run(void *arg)
{
  loop *l = arg;
  struct io_uring_sqe *sqe;

  if (ring_init(l) < 0)
    return;
  l->ring_ok = 1;
  arm_accept(l);
  sqe = sqe_get(l);
  io_uring_prep_read(sqe, l->stopfd, &l->stopval, sizeof(l->stopval), 0);
  io_uring_sqe_set_data64(sqe, tag(NULL, OP_STOP));
  for (;;) {
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int rc = io_uring_submit_and_wait(&l->ring, 1);

    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
      return;
    io_uring_for_each_cqe(&l->ring, head, cqe)
    {
      uint64_t ud = io_uring_cqe_get_data64(cqe);
      int op = (int)(ud & 15);
      conn *c = (conn *)(uintptr_t)(ud & ~(uint64_t)15);
      seen++;
      switch (op) {
      case OP_STOP: io_uring_cq_advance(&l->ring, seen); return;
      case OP_ACCEPT: on_accept(l, cqe->res, cqe->flags); break;
      case OP_RECV: on_recv(l, c, cqe->res); break;
      case OP_SEND: on_send(c, cqe->res); break;
      default: break;
      }
    }
    io_uring_cq_advance(&l->ring, seen);
  }
}

static void stop(void *arg)
{
  peer_wake(((loop *)arg)->stopfd);
}

static void destroy(void *arg)
{
  loop *l = arg;
  /* Open connections go with the process: nothing tracks them here. */
  if (l->ring_ok)
    io_uring_queue_exit(&l->ring);
  close(l->lfd);
  close(l->stopfd);
  free(l);
}

int main(int argc, char **argv)
{
  static const peer_ops ops = {create, run, stop, destroy};
  return peer_main(argc, argv, &ops);
}
