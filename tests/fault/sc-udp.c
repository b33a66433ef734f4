/* sc-udp.c - a UDP echo (gev_udp_server on a server's two loops) and a
 * client socket on a loop of its own, fed with gev_udp_send_to from the
 * test's thread (every send crosses to the loop). Each datagram carries
 * its sequence number and a pattern; the client checks every echo. The
 * sender keeps a small window in flight, so with no fault loopback loses
 * nothing. Under faults a datagram may be lost only when the API said so:
 * a send that returned -errno, an on_error, a socket's early on_close, or
 * the sockets' send_errors and dropped counters. */
#include "harness.h"

#include <gev/udp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DGRAMS = 240, WINDOW = 12 };
static const size_t sizes[] = {4, 100, 1400, 9000, 60000};

static atomic_int got, dups, bad, errors, send_errs, closes, srv_closes;
static atomic_uchar seen[DGRAMS];

static size_t size_of(uint32_t seq)
{
  return sizes[seq % (sizeof(sizes) / sizeof(sizes[0]))];
}

static void fill(unsigned char *p, uint32_t seq)
{
  size_t n = size_of(seq);
  memcpy(p, &seq, 4);
  for (size_t i = 4; i < n; i++)
    p[i] = fr_pat(seq, i);
}

static void echo(gev_udp *u, const gev_udp_datagram *d)
{
  if (gev_udp_send_to(u, d->peer, d->peer_len, d->data, d->len) < 0)
    atomic_fetch_add(&send_errs, 1);
}

static void check(gev_udp *u, const gev_udp_datagram *d)
{
  const unsigned char *p = d->data;
  uint32_t seq;

  (void)u;
  if (d->len < 4 || d->truncated) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  memcpy(&seq, p, 4);
  if (seq >= DGRAMS || d->len != size_of(seq)) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  for (size_t i = 4; i < d->len; i++)
    if (p[i] != fr_pat(seq, i)) {
      atomic_fetch_add(&bad, 1);
      return;
    }
  if (atomic_exchange(&seen[seq], 1))
    atomic_fetch_add(&dups, 1);
  else
    atomic_fetch_add(&got, 1);
}

static void on_error(gev_udp *u, int err)
{
  (void)u, (void)err;
  atomic_fetch_add(&errors, 1);
}
static void on_close(gev_udp *u)
{
  (void)u;
  atomic_fetch_add(&closes, 1);
}
static void on_srv_close(gev_udp *u)
{
  on_close(u);
  atomic_fetch_add(&srv_closes, 1);
}

static void nap_ms(long ms)
{
  nanosleep(&(struct timespec){.tv_nsec = ms * 1000000L}, NULL);
}

/* Sends every datagram with at most WINDOW unanswered (the waits bounded
 * in all);
 * returns how many sends the API refused, *first the first error. */
static int send_all(gev_udp *cu, int port, int *first)
{
  struct sockaddr_in to = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  static unsigned char buf[65536];
  int refused = 0, budget = 250; /* 2 ms naps in all: a lossy run goes on */

  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (uint32_t seq = 0; seq < DGRAMS; seq++) {
    int rc;
    while (budget > 0 && (int)seq - refused - atomic_load(&got) > WINDOW)
      budget--, nap_ms(2);
    fill(buf, seq);
    rc = gev_udp_send_to(cu, (struct sockaddr *)&to, sizeof(to), buf,
                         size_of(seq));
    if (rc < 0) {
      refused++;
      if (!*first)
        *first = rc;
    }
  }
  return refused;
}

/* What the API reported as not delivered, on both sides. */
static long reported(gev_udp *cu, gev_udp_server *us)
{
  long n = atomic_load(&errors) + atomic_load(&send_errs);
  gev_udp_stats st;

  /* A socket that closed before the end (on_close) explains any loss. */
  if (atomic_load(&closes))
    n += DGRAMS;

  for (int i = -1; i < gev_udp_server_num_sockets(us); i++) {
    memset(&st, 0, sizeof(st));
    gev_udp_get_stats(i < 0 ? cu : gev_udp_server_socket(us, i), &st);
    n += (long)(st.send_errors + st.dropped);
  }
  return n;
}

static int verdict(fault_run *r, int refused, long rep, int nsock, int early)
{
  int lost = DGRAMS - refused - atomic_load(&got);
  bool quiet = r->how == RUN_COUNT || fault_injected() == 0;
  bool alloc =
      r->how == RUN_NTH &&
      (r->kind == FK_MALLOC || r->kind == FK_CALLOC || r->kind == FK_REALLOC);

  if (atomic_load(&bad) || atomic_load(&dups))
    return fr_fail(r, "%d corrupt, %d duplicated datagrams", atomic_load(&bad),
                   atomic_load(&dups));
  if (atomic_load(&closes) > nsock + 1)
    return fr_fail(r, "%d on_close for %d sockets", atomic_load(&closes),
                   nsock + 1);
  if (quiet && (lost || refused || rep || atomic_load(&closes) != nsock + 1))
    return fr_fail(r, "no fault: %d lost, %d refused, %ld reported, %d closes",
                   lost, refused, rep, atomic_load(&closes));
  /* Memory a socket needs is taken when it is created: past a successful
   * gev_udp_server_new, no allocation failure may close a server socket
   * (its peers' datagrams would be lost with it). */
  if (alloc && early)
    return fr_fail(r, "%d server sockets closed under an allocation fault",
                   early);
  if (r->how == RUN_RANDOM && lost)
    return fr_fail(r, "%d datagrams lost to transient faults", lost);
  if (lost > rep)
    return fr_fail(r, "%d datagrams lost, only %ld reported", lost, rep);
  return 0;
}

int sc_udp(fault_run *r)
{
  gev_handler th = {0};
  gev_options o = {.num_loops = 2};
  gev_udp_handler sh = {
      .on_datagram = echo, .on_error = on_error, .on_close = on_srv_close};
  gev_udp_handler ch = {
      .on_datagram = check, .on_error = on_error, .on_close = on_close};
  gev_udp_options uo = {.address = "127.0.0.1:0", .rcvbuf = 1 << 20};
  gev_udp_options uc = {.rcvbuf = 1 << 20};
  gev_udp_server *us = NULL;
  gev_udp *cu = NULL;
  fr_server sv;
  fr_loop cl;
  int err, err2, refused, first = 0, nsock, fail, early;
  long rep;

  fr_logger_install();
  if ((err = fr_server_open(&sv, &th, &o)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, 1, true);
  }
  if ((err = gev_udp_server_new(&us, sv.s, &sh, &uo)) < 0) {
    fr_server_close(&sv, 0);
    r->gev_error = err;
    return fr_finish(r, 0, 1, true);
  }
  if ((err = fr_loop_open(&cl)) == 0 &&
      (err = gev_udp_new(&cu, cl.l, &ch, &uc)) < 0)
    fr_loop_close(&cl);
  if (err < 0) {
    fr_server_close(&sv, 0);
    gev_udp_server_free(us);
    r->gev_error = err;
    return fr_finish(r, 0, 1, true);
  }
  refused = send_all(cu, gev_udp_server_port(us), &first);
  /* The last window: until everything came or nothing came for 0.5 s. */
  for (int w = 0, last = -1; w < 50 && atomic_load(&got) < DGRAMS - refused;
       w++) {
    int g = atomic_load(&got);
    if (g != last)
      w = 0, last = g;
    nap_ms(10);
  }
  rep = reported(cu, us);
  early = atomic_load(&srv_closes);
  nsock = gev_udp_server_num_sockets(us);
  gev_udp_free(cu);
  err = fr_loop_close(&cl);
  err2 = fr_server_close(&sv, 0);
  gev_udp_server_free(us);
  if (err2 < 0) { /* the server never ran: nothing could be echoed */
    r->gev_error = err2;
    return fr_finish(r, 0, 1, true);
  }
  fail = verdict(r, refused, rep, nsock, early);
  r->gev_error = err < 0 ? err : first;
  return fail | fr_finish(r, 1, 1, false);
}
