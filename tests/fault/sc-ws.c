/* sc-ws.c - a WebSocket echo server (gev_ws_server_new, two loops) with
 * three gev_ws_connect clients on a loop of their own, whose messages of
 * several sizes (empty to past 64 KiB, text and binary) are sent from the
 * test's thread (gev_ws_send across threads), checked in order as they
 * come back, then closed with the close handshake; and one raw client on a
 * thread that sends fragmented messages with a ping between fragments and
 * checks the pong, the reassembled echo and the Close. */
#include "harness.h"

#include <gev/ws.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CLIENTS = 3, NMSG = 6, RAWMSG = 3 };
static const size_t msg_len[NMSG] = {0, 1, 125, 126, 70000, 200000};
static const size_t raw_len[RAWMSG] = {3, 300, 70000};

typedef struct wcl {
  int idx;
  gev_ws *ws; /* referenced from on_open until the test is done */
  atomic_int opened, closed, failed, next, bad, code;
} wcl;

static atomic_int srv_opens, srv_closes, srv_bad, send_errs;

static unsigned char msg_byte(int opcode, uint32_t seed, size_t i)
{
  unsigned char b = fr_pat(seed, i);
  return opcode == GEV_WS_TEXT ? (unsigned char)(0x20 + (b & 0x3f)) : b;
}

static int msg_opcode(int k)
{
  return k % 2 ? GEV_WS_TEXT : GEV_WS_BINARY;
}

static bool msg_ok(int opcode, uint32_t seed, const unsigned char *p, size_t n,
                   size_t want, int want_op)
{
  if (opcode != want_op || n != want)
    return false;
  for (size_t i = 0; i < n; i++)
    if (p[i] != msg_byte(opcode, seed, i))
      return false;
  return true;
}

/* ---- the server -------------------------------------------------------- */

static void srv_open(gev_ws *ws)
{
  atomic_fetch_add(&srv_opens, 1);
  if (gev_ws_context(ws))
    atomic_fetch_add(&srv_bad, 1);
  gev_ws_set_context(ws, ws);
}
static void srv_message(gev_ws *ws, int op, const void *p, size_t n)
{
  /* A lost echo would shift every later one: end the connection instead. */
  if (gev_ws_send(ws, op, p, n) < 0) {
    atomic_fetch_add(&send_errs, 1);
    gev_ws_close(ws, GEV_WS_CLOSE_INTERNAL, "echo failed");
  }
}
static void srv_close(gev_ws *ws, int code, const char *reason)
{
  (void)code, (void)reason;
  if (gev_ws_context(ws) != ws)
    atomic_fetch_add(&srv_bad, 1); /* a close without open, or twice */
  gev_ws_set_context(ws, NULL);
  atomic_fetch_add(&srv_closes, 1);
}

/* ---- the gev_ws_connect clients ---------------------------------------- */

static void cl_open(gev_ws *ws)
{
  wcl *c = gev_ws_context(ws);
  gev_ws_ref(ws);
  c->ws = ws;
  atomic_fetch_add(&c->opened, 1);
}
static void cl_message(gev_ws *ws, int op, const void *p, size_t n)
{
  wcl *c = gev_ws_context(ws);
  int k = atomic_load(&c->next);

  if (k >= NMSG || !msg_ok(op, (uint32_t)(c->idx * 16 + k), p, n, msg_len[k],
                           msg_opcode(k))) {
    atomic_fetch_add(&c->bad, 1);
    return;
  }
  atomic_store(&c->next, k + 1);
  if (k + 1 == NMSG && gev_ws_close(ws, GEV_WS_CLOSE_NORMAL, "done") < 0)
    atomic_fetch_add(&send_errs, 1);
}
static void cl_close(gev_ws *ws, int code, const char *reason)
{
  wcl *c = gev_ws_context(ws);
  (void)reason;
  atomic_store(&c->code, code);
  atomic_fetch_add(&c->closed, 1);
}
static void cl_fail(void *ctx, int err)
{
  wcl *c = ctx;
  atomic_store(&c->code, err);
  atomic_fetch_add(&c->failed, 1);
}

static void nap_ms(long ms)
{
  nanosleep(&(struct timespec){.tv_nsec = ms * 1000000L}, NULL);
}

/* Waits (bounded) until every client opened or failed, then sends each
 * its messages from this thread. Returns the first send error. */
static int send_all(wcl *cl)
{
  static unsigned char buf[200000];
  int first = 0;

  for (int w = 0; w < 1000; w++) {
    int n = 0;
    for (int i = 0; i < CLIENTS; i++)
      n += atomic_load(&cl[i].opened) || atomic_load(&cl[i].failed) ||
           atomic_load(&cl[i].closed);
    if (n == CLIENTS || atomic_load(&fr_abort))
      break;
    nap_ms(10);
  }
  for (int i = 0; i < CLIENTS; i++) {
    if (!atomic_load(&cl[i].opened))
      continue;
    for (int k = 0; k < NMSG; k++) {
      int op = msg_opcode(k), rc;
      for (size_t j = 0; j < msg_len[k]; j++)
        buf[j] = msg_byte(op, (uint32_t)(i * 16 + k), j);
      rc = gev_ws_send(cl[i].ws, op, buf, msg_len[k]);
      if (rc < 0) {
        first = first ? first : rc;
        gev_ws_close(cl[i].ws, GEV_WS_CLOSE_NORMAL, "send failed");
        break; /* the rest would come back out of order */
      }
    }
  }
  return first;
}

/* The client is served: every echo came back and the close handshake
 * ended normally. */
static int cl_outcome(fault_run *r, wcl *c)
{
  int opened = atomic_load(&c->opened), closed = atomic_load(&c->closed),
      failed = atomic_load(&c->failed);

  if (atomic_load(&c->bad))
    return fr_fail(r, "ws client %d: wrong message", c->idx), CL_BAD;
  if (opened > 1 || closed > 1 || failed > 1 || closed != opened ||
      (failed && opened))
    return fr_fail(r, "ws client %d: %d open, %d close, %d fail", c->idx,
                   opened, closed, failed),
           CL_BAD;
  if (failed) {
    if (atomic_load(&c->code) >= 0)
      fr_fail(r, "ws client %d: on_fail without an errno", c->idx);
    return CL_NOCONN;
  }
  if (!closed)
    return CL_TIMEOUT;
  return atomic_load(&c->next) == NMSG &&
                 atomic_load(&c->code) == GEV_WS_CLOSE_NORMAL
             ? CL_FULL
             : CL_CLOSED;
}

/* ---- the raw client: fragments, a ping between them, the Close ---------- */

typedef struct raw_client {
  int port, outcome;
  pthread_t t;
} raw_client;

static int raw_dial(int port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  struct timeval tv = {.tv_sec = 5};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A read that failed: a timeout is a hang, anything else a close. */
static int raw_why(ssize_t n)
{
  return n < 0 && errno == EAGAIN ? CL_TIMEOUT : CL_CLOSED;
}

static int read_full(int fd, unsigned char *p, size_t n)
{
  for (size_t got = 0; got < n;) {
    ssize_t k = read(fd, p + got, n - got);
    if (k <= 0)
      return raw_why(k);
    got += (size_t)k;
  }
  return 0;
}

static int write_full(int fd, const unsigned char *p, size_t n)
{
  for (size_t off = 0; off < n;) {
    ssize_t k = send(fd, p + off, n - off, MSG_NOSIGNAL);
    if (k <= 0)
      return raw_why(k);
    off += (size_t)k;
  }
  return 0;
}

/* One masked frame (a fixed key of four different bytes, applied by hand:
 * a wrong mask offset in the library shows). */
static int frame_out(int fd, int fin_op, const unsigned char *p, size_t n)
{
  static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
  static unsigned char b[14 + 70000];
  size_t h = 0;

  b[h++] = (unsigned char)fin_op;
  if (n < 126) {
    b[h++] = (unsigned char)(0x80 | n);
  } else if (n < 65536) {
    b[h++] = 0x80 | 126;
    b[h++] = (unsigned char)(n >> 8);
    b[h++] = (unsigned char)n;
  } else {
    b[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      b[h++] = (unsigned char)((uint64_t)n >> (8 * i));
  }
  memcpy(b + h, key, 4);
  h += 4;
  for (size_t i = 0; i < n; i++)
    b[h + i] = p[i] ^ key[i & 3];
  return write_full(fd, b, h + n);
}

/* One whole unmasked frame from the server into p (cap bytes). */
static int frame_in(int fd, int *op, unsigned char *p, size_t cap, size_t *n)
{
  unsigned char h[8];
  uint64_t len;
  int rc;

  if ((rc = read_full(fd, h, 2)))
    return rc;
  if ((h[0] & 0x80) == 0 || (h[1] & 0x80))
    return CL_BAD; /* the echo is one unmasked frame */
  *op = h[0] & 0x0f;
  len = h[1] & 0x7f;
  if (len >= 126) {
    int k = len == 126 ? 2 : 8;
    if ((rc = read_full(fd, h, (size_t)k)))
      return rc;
    len = 0;
    for (int i = 0; i < k; i++)
      len = len << 8 | h[i];
  }
  if (len > cap)
    return CL_BAD;
  *n = (size_t)len;
  return read_full(fd, p, *n);
}

static int raw_handshake(int fd)
{
  static const char req[] = "GET /echo HTTP/1.1\r\nHost: localhost\r\n"
                            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
  char resp[1024];
  size_t got = 0;
  int rc;

  if ((rc = write_full(fd, (const unsigned char *)req, sizeof(req) - 1)))
    return rc;
  /* Byte by byte: the server sends nothing after the head unasked. */
  while (got < sizeof(resp) - 1) {
    if ((rc = read_full(fd, (unsigned char *)resp + got, 1)))
      return rc;
    resp[++got] = 0;
    if (got >= 4 && !memcmp(resp + got - 4, "\r\n\r\n", 4))
      break;
  }
  /* A 500 is the server failing this one connection visibly (it could
   * not allocate what the upgrade needs), as a Close would be later. */
  if (!strncmp(resp, "HTTP/1.1 500", 12))
    return CL_CLOSED;
  if (strncmp(resp, "HTTP/1.1 101", 12) ||
      !strstr(resp, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
    return CL_BAD;
  return 0;
}

/* One message in three fragments with a ping after the first; the pong
 * and then the whole message must come back. */
static int raw_message(int fd, int k, unsigned char *in)
{
  static unsigned char out[70000];
  size_t n = raw_len[k], a = n / 3, b = 2 * n / 3, got;
  int rc, op;

  for (size_t i = 0; i < n; i++)
    out[i] = msg_byte(GEV_WS_BINARY, (uint32_t)(900 + k), i);
  if ((rc = frame_out(fd, GEV_WS_BINARY, out, a)) ||
      (rc =
           frame_out(fd, 0x80 | GEV_WS_PING, (const unsigned char *)"pi", 2)) ||
      (rc = frame_out(fd, 0, out + a, b - a)) ||
      (rc = frame_out(fd, 0x80, out + b, n - b)))
    return rc;
  if ((rc = frame_in(fd, &op, in, 125, &got)))
    return rc;
  if (op == GEV_WS_CLOSE)
    return CL_CLOSED; /* the server failed the connection, visibly */
  if (op != GEV_WS_PONG || got != 2 || memcmp(in, "pi", 2))
    return CL_BAD;
  if ((rc = frame_in(fd, &op, in, sizeof(out), &got)))
    return rc;
  if (op == GEV_WS_CLOSE)
    return CL_CLOSED;
  return msg_ok(op, (uint32_t)(900 + k), in, got, n, GEV_WS_BINARY) ? 0
                                                                    : CL_BAD;
}

static int raw_session(int fd)
{
  static const unsigned char bye[] = {0x03, 0xe8, 'o', 'k'};
  static unsigned char in[70000];
  size_t got;
  int rc, op;

  if ((rc = raw_handshake(fd)))
    return rc;
  for (int k = 0; k < RAWMSG; k++)
    if ((rc = raw_message(fd, k, in)))
      return rc;
  if ((rc = frame_out(fd, 0x80 | GEV_WS_CLOSE, bye, sizeof(bye))) ||
      (rc = frame_in(fd, &op, in, 125, &got)))
    return rc;
  if (op != GEV_WS_CLOSE || got < 2 || in[0] != 0x03 || in[1] != 0xe8)
    return CL_BAD;
  /* The server closes the TCP connection after its Close. */
  {
    ssize_t k = read(fd, in, 1);
    return k == 0 ? CL_FULL : k > 0 ? CL_BAD : raw_why(k);
  }
}

static void *raw_main(void *arg)
{
  raw_client *c = arg;
  int fd = raw_dial(c->port);

  if (fd < 0) {
    c->outcome = CL_NOCONN;
    return NULL;
  }
  c->outcome = raw_session(fd);
  close(fd);
  return NULL;
}

typedef struct srv {
  gev_server *s;
  pthread_t t;
  int rc;
} srv;

static void *srv_main(void *arg)
{
  srv *v = arg;
  v->rc = gev_server_start(v->s);
  if (v->rc < 0)
    atomic_store(&fr_abort, true);
  return NULL;
}

static int wait_clients(wcl *cl)
{
  for (int w = 0; w < 2000; w++) {
    int n = 0;
    for (int i = 0; i < CLIENTS; i++)
      n += atomic_load(&cl[i].closed) || atomic_load(&cl[i].failed);
    if (n == CLIENTS)
      return 0;
    nap_ms(10);
  }
  return -1;
}

static int run_clients(fault_run *r, int port, wcl *cl, int *served)
{
  gev_ws_handler ch = {.on_open = cl_open,
                       .on_message = cl_message,
                       .on_close = cl_close,
                       .on_fail = cl_fail};
  gev_ws_options wo = {.close_timeout_ms = 2000, .connect_timeout_ms = 5000};
  raw_client raw = {.port = port};
  char url[64];
  fr_loop l;
  int err, first = 0;

  if ((err = fr_loop_open(&l)) < 0) {
    *served = -1; /* no client could start: a set-up failure */
    return err;
  }
  pthread_create(&raw.t, NULL, raw_main, &raw);
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/echo", port);
  for (int i = 0; i < CLIENTS; i++) {
    cl[i].idx = i;
    if ((err = gev_ws_connect(l.l, url, &ch, &wo, &cl[i])) < 0) {
      atomic_store(&cl[i].code, err);
      atomic_store(&cl[i].failed, 1);
    }
  }
  first = send_all(cl);
  wait_clients(cl);
  err = fr_loop_close(&l);
  pthread_join(raw.t, NULL);
  for (int i = 0; i < CLIENTS; i++) {
    int o = cl_outcome(r, &cl[i]);
    if (o == CL_TIMEOUT)
      fr_fail(r, "ws client %d hung", i);
    *served += o == CL_FULL;
    if (cl[i].ws)
      gev_ws_unref(cl[i].ws);
  }
  /* A server whose start failed leaves the raw client in the listen
   * queue until its timeout: a set-up failure, not a hang. */
  if (raw.outcome == CL_BAD ||
      (raw.outcome == CL_TIMEOUT && !atomic_load(&fr_abort)))
    fr_fail(r, "raw ws client: %s", fr_outcome_name(raw.outcome));
  *served += raw.outcome == CL_FULL;
  return err < 0 ? err : first;
}

int sc_ws(fault_run *r)
{
  gev_ws_handler sh = {
      .on_open = srv_open, .on_message = srv_message, .on_close = srv_close};
  gev_ws_options wo = {.close_timeout_ms = 2000};
  gev_options o = {.num_loops = 2, .address = "127.0.0.1:0"};
  wcl cl[CLIENTS];
  srv v = {0};
  int err, served = 0;
  bool whole;

  memset(cl, 0, sizeof(cl));
  fr_logger_install();
  if ((err = gev_ws_server_new(&v.s, &sh, &wo, &o)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, CLIENTS + 1, true);
  }
  pthread_create(&v.t, NULL, srv_main, &v);
  err = run_clients(r, gev_server_port(v.s), cl, &served);
  gev_server_stop(v.s);
  pthread_join(v.t, NULL);
  gev_ws_server_free(v.s);
  if (atomic_load(&srv_bad) ||
      atomic_load(&srv_opens) != atomic_load(&srv_closes))
    fr_fail(r, "ws server: %d open, %d close, %d violations",
            atomic_load(&srv_opens), atomic_load(&srv_closes),
            atomic_load(&srv_bad));
  whole = v.rc < 0 || served < 0;
  r->gev_error = v.rc < 0 ? v.rc : err;
  if (!r->gev_error && atomic_load(&send_errs))
    r->gev_error = -EIO; /* a send refused inside a callback */
  return fr_finish(r, whole ? 0 : served, CLIENTS + 1, whole) |
         (r->why[0] != 0);
}
