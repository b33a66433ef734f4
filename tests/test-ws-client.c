/* test-ws-client.c - the WebSocket client (gev_ws_connect): against gev's
 * own server, and against a raw-socket server that checks what the client
 * sends (masking with a fresh key per frame, the handshake request) and
 * answers wrongly on purpose (a bad Sec-WebSocket-Accept, no 101, masked
 * frames). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>

#include "ws-internal.h"
#include "ws-raw.h"

#include <gev/ws.h>

/* ---- a client on its own loop thread ---------------------------------- */

typedef struct run {
  gev_loop *l;
  pthread_t t;
  int opens, fails, fail_err, closes, close_code, msgs;
  size_t total; /* payload bytes received */
  char protocol[32];
  /* on_open sends these, then closes after `expect` messages */
  const void *send;
  size_t send_len;
  int send_count, send_op, expect;
} run;

static void c_open(gev_ws *ws)
{
  run *r = gev_ws_context(ws);

  snprintf(r->protocol, sizeof(r->protocol), "%s", gev_ws_protocol(ws));
  for (int i = 0; i < r->send_count; i++)
    ck_assert_int_eq(gev_ws_send(ws, r->send_op, r->send, r->send_len), 0);
  if (r->expect == 0)
    gev_ws_close(ws, 1000, "done");
  th_inc(&r->opens);
}

static void c_message(gev_ws *ws, int op, const void *p, size_t n)
{
  run *r = gev_ws_context(ws);

  ck_assert_int_eq(op, r->send_op);
  ck_assert_uint_eq(n, r->send_len);
  ck_assert(n == 0 || memcmp(p, r->send, n) == 0);
  r->total += n;
  if (++r->msgs == r->expect)
    gev_ws_close(ws, 1000, "done");
}

static void c_close(gev_ws *ws, int code, const char *reason)
{
  run *r = gev_ws_context(ws);

  (void)reason;
  th_st(&r->close_code, code);
  th_inc(&r->closes);
  gev_loop_stop(r->l);
}

static void c_fail(void *ctx, int err)
{
  run *r = ctx;

  th_st(&r->fail_err, err);
  th_inc(&r->fails);
  gev_loop_stop(r->l);
}

static const gev_ws_handler client_h = {.on_open = c_open,
                                        .on_message = c_message,
                                        .on_close = c_close,
                                        .on_fail = c_fail};

static void *loop_main(void *arg)
{
  run *r = arg;

  gev_loop_run(r->l);
  return NULL;
}

static void client_start(run *r, const char *url, const gev_ws_options *wo)
{
  ck_assert_int_eq(gev_loop_new(&r->l), 0);
  ck_assert_int_eq(gev_ws_connect(r->l, url, &client_h, wo, r), 0);
  ck_assert_int_eq(pthread_create(&r->t, NULL, loop_main, r), 0);
}

static void client_join(run *r)
{
  th_join(r->t, 30);
  gev_loop_free(r->l);
}

/* ---- gev's server ----------------------------------------------------- */

static void s_message(gev_ws *ws, int op, const void *p, size_t n)
{
  gev_ws_send(ws, op, p, n);
}

static const char *s_pick(const char *const *offered, size_t n, void *arg)
{
  (void)arg;
  return n > 1 ? offered[1] : NULL;
}

typedef struct srv {
  gev_server *s;
  pthread_t t;
} srv;

static void *srv_main(void *arg)
{
  gev_server_start(((srv *)arg)->s);
  return NULL;
}

static int srv_start(srv *s)
{
  static const gev_ws_handler h = {.on_message = s_message};
  gev_ws_options wo = {.select_protocol = s_pick};
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 1};

  ck_assert_int_eq(gev_ws_server_new(&s->s, &h, &wo, &opt), 0);
  ck_assert_int_eq(pthread_create(&s->t, NULL, srv_main, s), 0);
  return gev_server_port(s->s);
}

static void srv_stop(srv *s)
{
  gev_server_stop(s->s);
  th_join(s->t, 20);
  gev_ws_server_free(s->s);
}

START_TEST(test_echo_with_gev_server)
{
  static const size_t lens[] = {0, 125, 126, 65535, 65536, 1 << 20};
  srv s;
  int port = srv_start(&s);
  char url[64];

  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/echo", port);
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    unsigned char *p = malloc(lens[i] + 1);
    run r = {.send = p,
             .send_len = lens[i],
             .send_count = 5,
             .send_op = i % 2 ? GEV_WS_BINARY : GEV_WS_TEXT,
             .expect = 5};
    gev_ws_options wo = {.protocols = "chat, superchat"};

    memset(p, 'q', lens[i] + 1);
    client_start(&r, url, &wo);
    client_join(&r);
    ck_assert_int_eq(r.opens, 1);
    ck_assert_int_eq(r.msgs, 5);
    ck_assert_int_eq(r.closes, 1);
    ck_assert_int_eq(r.close_code, 1000); /* the server's answer */
    ck_assert_str_eq(r.protocol, "superchat");
    free(p);
  }
  srv_stop(&s);
}
END_TEST

/* ---- two gev peers streaming at each other ---------------------------- *
 * The client pushes 32 MiB in messages with gev_ws_send (from on_open and
 * its drain callback) and reads the echo back; both sides have a 64 KiB
 * cap, the server small socket buffers (more than the client's kernel
 * buffers can hold comes back). The client answers nothing it is given,
 * so its high output must not hold its delivery: if it did, the server's
 * output would fill, the server would hold its own, and both would wait. */

#define ST_TOTAL ((size_t)32 << 20)
#define ST_MSG 8192

typedef struct stream_run {
  gev_loop *l;
  size_t sent, got;
  int bad, done;
} stream_run;

static unsigned char st_byte(size_t off)
{
  return (unsigned char)(off ^ (off >> 11) * 7);
}

static void st_pump(gev_conn *c, void *arg)
{
  gev_ws *ws = arg;
  stream_run *r = gev_ws_context(ws);
  unsigned char m[ST_MSG];

  while (r->sent < ST_TOTAL) {
    int e;

    for (size_t i = 0; i < ST_MSG; i++)
      m[i] = st_byte(r->sent + i);
    e = gev_ws_send(ws, GEV_WS_BINARY, m, ST_MSG);
    if (e == -ENOBUFS) {
      if (gev_conn_notify_drain(c, 8192, st_pump, ws) != 0)
        th_inc(&r->bad);
      return;
    }
    if (e != 0) {
      th_inc(&r->bad);
      return;
    }
    r->sent += ST_MSG;
  }
}

static void st_open(gev_ws *ws)
{
  gev_conn *c = gev_ws_conn(ws);

  gev_conn_set_max_buffer(c, 64 * 1024);
  st_pump(c, ws);
}

static void st_message(gev_ws *ws, int op, const void *p, size_t n)
{
  stream_run *r = gev_ws_context(ws);
  const unsigned char *b = p;

  if (op != GEV_WS_BINARY || n != ST_MSG)
    th_inc(&r->bad);
  for (size_t i = 0; i < n; i++)
    if (b[i] != st_byte(r->got + i)) {
      th_inc(&r->bad);
      break;
    }
  r->got += n;
  if (r->got == ST_TOTAL) {
    th_st(&r->done, 1);
    gev_ws_close(ws, 1000, "done");
  }
}

static void st_close(gev_ws *ws, int code, const char *reason)
{
  stream_run *r = gev_ws_context(ws);

  (void)code;
  (void)reason;
  gev_loop_stop(r->l);
}

static void st_fail(void *ctx, int err)
{
  stream_run *r = ctx;

  (void)err;
  th_inc(&r->bad);
  gev_loop_stop(r->l);
}

static void *st_loop(void *arg)
{
  gev_loop_run(((stream_run *)arg)->l);
  return NULL;
}

START_TEST(test_full_duplex_gev_peers)
{
  static const gev_ws_handler sh = {.on_message = s_message};
  static const gev_ws_handler ch = {.on_open = st_open,
                                    .on_message = st_message,
                                    .on_close = st_close,
                                    .on_fail = st_fail};
  gev_options opt = {.address = "127.0.0.1:0",
                     .num_loops = 1,
                     .max_buffer = 64 * 1024,
                     .rcvbuf = 16384,
                     .sndbuf = 16384};
  stream_run r = {0};
  char url[64];
  pthread_t t;
  srv s;

  ck_assert_int_eq(gev_ws_server_new(&s.s, &sh, NULL, &opt), 0);
  ck_assert_int_eq(pthread_create(&s.t, NULL, srv_main, &s), 0);
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/echo", gev_server_port(s.s));
  ck_assert_int_eq(gev_loop_new(&r.l), 0);
  ck_assert_int_eq(gev_ws_connect(r.l, url, &ch, NULL, &r), 0);
  ck_assert_int_eq(pthread_create(&t, NULL, st_loop, &r), 0);
  if (!th_wait_int(&r.done, 1, 30000)) {
    gev_loop_stop(r.l);
    th_join(t, 20);
    ck_abort_msg("stalled: %zu of %zu sent, %zu echoed back", r.sent, ST_TOTAL,
                 r.got);
  }
  th_join(t, 20);
  gev_loop_free(r.l);
  ck_assert_int_eq(th_ld(&r.bad), 0);
  srv_stop(&s);
}
END_TEST

START_TEST(test_refused)
{
  run r = {0};
  char url[64];
  srv s;
  int port = srv_start(&s);

  srv_stop(&s); /* the port is free again: nobody listens */
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
  client_start(&r, url, NULL);
  client_join(&r);
  ck_assert_int_eq(r.fails, 1);
  ck_assert_int_eq(r.fail_err, -ECONNREFUSED);
  ck_assert_int_eq(r.opens + r.closes, 0);
}
END_TEST

/* A connect whose loop is freed before it ever ran: the request is
 * dropped, no callback runs, and the library's WebSocket state goes with
 * it (it leaked: the ASan and valgrind runs see to it). */
START_TEST(test_loop_freed_unrun)
{
  gev_loop *l;
  run r = {0};

  ck_assert_int_eq(gev_loop_new(&l), 0);
  ck_assert_int_eq(
      gev_ws_connect(l, "ws://127.0.0.1:9/path", &client_h, NULL, &r), 0);
  gev_loop_free(l);
  ck_assert_int_eq(r.fails + r.opens + r.closes, 0);
}
END_TEST

START_TEST(test_bad_urls)
{
  gev_loop *l;

  ck_assert_int_eq(gev_loop_new(&l), 0);
  ck_assert_int_eq(gev_ws_connect(l, "wss://x/", &client_h, NULL, NULL),
                   -EPROTONOSUPPORT);
  ck_assert_int_eq(gev_ws_connect(l, "http://x/", &client_h, NULL, NULL),
                   -EPROTONOSUPPORT);
  ck_assert_int_eq(gev_ws_connect(l, "ws:///", &client_h, NULL, NULL), -EINVAL);
  ck_assert_int_eq(gev_ws_connect(l, "x", &client_h, NULL, NULL), -EINVAL);
  gev_loop_free(l);
}
END_TEST

/* ---- a raw server ----------------------------------------------------- */

static int raw_listen(int *port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  ck_assert(fd >= 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(fd, 4), 0);
  getsockname(fd, (struct sockaddr *)&sa, &len);
  *port = ntohs(sa.sin_port);
  return fd;
}

static int raw_accept(int lfd)
{
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  struct timeval tv = {10, 0};
  int fd;

  ck_assert_int_eq(poll(&p, 1, 10000), 1);
  fd = accept(lfd, NULL, NULL);
  ck_assert(fd >= 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

/* Reads the client's request; returns its accept value (static). */
static const char *read_request(int fd, char *head, size_t cap)
{
  static char accept[32];
  char key[64];
  const char *k;

  ck_assert_int_gt(raw_read_head(fd, head, cap), 0);
  ck_assert_msg(strncmp(head, "GET /path?q=1 HTTP/1.1\r\n", 24) == 0, "%s",
                head);
  ck_assert(strstr(head, "\r\nUpgrade: websocket\r\n"));
  ck_assert(strstr(head, "\r\nSec-WebSocket-Version: 13\r\n"));
  ck_assert(strstr(head, "\r\nHost: 127.0.0.1:"));
  k = strstr(head, "\r\nSec-WebSocket-Key: ");
  ck_assert(k);
  ck_assert_int_eq(sscanf(k + 21, "%63[^\r]", key), 1);
  ck_assert_uint_eq(strlen(key), 24);
  gev__ws_accept_key(key, strlen(key), accept);
  return accept;
}

/* Reads a client frame: it must be masked; returns the mask, unmasks. */
static uint32_t read_masked(int fd, unsigned *b0, unsigned char *p, size_t n)
{
  unsigned char h[8];
  uint32_t key;

  ck_assert(th_read_exact(fd, h, 2));
  ck_assert_msg(h[1] & 0x80, "a client frame was not masked");
  ck_assert_uint_eq(h[1] & 0x7f, n);
  ck_assert(th_read_exact(fd, h + 2, 4));
  ck_assert(th_read_exact(fd, p, n));
  for (size_t i = 0; i < n; i++)
    p[i] ^= h[2 + (i & 3)];
  memcpy(&key, h + 2, 4);
  *b0 = h[0];
  return key;
}

/* Reads the client's Close (masked, up to 125 bytes); returns its code. */
static int read_close(int fd)
{
  unsigned char h[6], p[125];
  size_t n;

  ck_assert(th_read_exact(fd, h, 6));
  ck_assert_uint_eq(h[0], 0x88);
  ck_assert(h[1] & 0x80);
  n = h[1] & 0x7f;
  ck_assert(n >= 2 && n <= 125);
  ck_assert(th_read_exact(fd, p, n));
  for (size_t i = 0; i < n; i++)
    p[i] ^= h[2 + (i & 3)];
  return p[0] << 8 | p[1];
}

typedef enum {
  GOOD,
  BAD_ACCEPT,
  ACCEPT_CASE, /* the right value with one letter's case changed */
  NOT_101,
  MASKED_FRAME,
  EXTENSION
} answer;

static void raw_server_case(answer how, int want_fails, int want_code)
{
  int port, lfd = raw_listen(&port), fd;
  char url[64], head[2048], resp[512];
  const char *accept;
  run r = {.send = "hello",
           .send_len = 5,
           .send_count = 8,
           .send_op = GEV_WS_TEXT,
           .expect = 1};

  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/path?q=1", port);
  client_start(&r, url, NULL);
  fd = raw_accept(lfd);
  accept = read_request(fd, head, sizeof(head));
  char swapped[64];
  snprintf(swapped, sizeof(swapped), "%s", accept);
  for (char *q = swapped; how == ACCEPT_CASE && *q; q++)
    if (isalpha((unsigned char)*q)) { /* base64 is case-sensitive */
      *q = (char)(islower((unsigned char)*q) ? toupper((unsigned char)*q)
                                             : tolower((unsigned char)*q));
      break;
    }
  if (how == ACCEPT_CASE)
    accept = swapped;
  snprintf(resp, sizeof(resp),
           how == NOT_101 ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                          : "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                            "websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: %s\r\n%s\r\n",
           how == BAD_ACCEPT ? "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" : accept,
           how == EXTENSION ? "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                            : "");
  ck_assert(th_write_all(fd, resp, strlen(resp)));
  if (how == GOOD || how == MASKED_FRAME) {
    uint32_t keys[8];
    unsigned char p[5];
    unsigned b0;
    int distinct = 0;

    for (int i = 0; i < 8; i++) {
      keys[i] = read_masked(fd, &b0, p, 5);
      ck_assert_uint_eq(b0, 0x81);
      ck_assert(memcmp(p, "hello", 5) == 0);
      distinct += i == 0 || keys[i] != keys[i - 1];
    }
    ck_assert_int_ge(distinct, 7); /* a fresh key per frame */
    if (how == GOOD)
      raw_send_chunked(fd, 0x81, "hello", 5, false, 1); /* byte-wise */
    else
      raw_send(fd, 0x81, "hello", 5); /* masked: a server may not */
    ck_assert_int_eq(read_close(fd), want_code);
    if (how == GOOD)
      raw_send(fd, 0x88, "\x03\xe8", 2), shutdown(fd, SHUT_WR);
  }
  close(fd);
  close(lfd);
  client_join(&r);
  ck_assert_int_eq(r.fails, want_fails);
  if (want_fails)
    ck_assert_int_eq(r.fail_err, -EPROTO);
  else
    ck_assert_int_eq(r.closes, 1);
}

/* A server that accepts and never answers the upgrade: on_fail says
 * -ETIMEDOUT once connect_timeout_ms has passed (it said -ECONNRESET). */
START_TEST(test_handshake_timeout)
{
  int port, lfd = raw_listen(&port), fd;
  gev_ws_options wo = {.connect_timeout_ms = 300};
  run r = {0};
  char url[64];

  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
  client_start(&r, url, &wo);
  fd = raw_accept(lfd);
  client_join(&r);
  ck_assert_int_eq(r.fails, 1);
  ck_assert_int_eq(r.fail_err, -ETIMEDOUT);
  ck_assert_int_eq(r.opens + r.closes, 0);
  close(fd);
  close(lfd);
}
END_TEST

START_TEST(test_raw_good)
{
  raw_server_case(GOOD, 0, 1000);
}
END_TEST

START_TEST(test_raw_bad_accept)
{
  raw_server_case(BAD_ACCEPT, 1, 0);
  raw_server_case(ACCEPT_CASE, 1, 0);
  raw_server_case(NOT_101, 1, 0);
  raw_server_case(EXTENSION, 1, 0);
}
END_TEST

START_TEST(test_raw_masked_frame)
{
  raw_server_case(MASKED_FRAME, 0, 1002);
}
END_TEST

/* RFC 6455 7.1.1: after the close handshake the client waits for the
 * server to close TCP (so TIME_WAIT is the server's), bounded by the
 * close timeout. @p server_first: the server starts the handshake;
 * @p server_closes: it then closes TCP (else the client's timeout ends
 * it). */
static void close_wait_case(bool server_first, bool server_closes)
{
  int port, lfd = raw_listen(&port), fd;
  char url[64], head[2048], resp[512];
  gev_ws_options wo = {.close_timeout_ms = server_closes ? 10000 : 300};
  run r = {.send_op = GEV_WS_TEXT, .expect = server_first ? -1 : 0};
  struct pollfd pf;
  unsigned char p[125];
  unsigned b0;

  snprintf(url, sizeof(url), "ws://127.0.0.1:%d/path?q=1", port);
  client_start(&r, url, &wo);
  fd = raw_accept(lfd);
  snprintf(resp, sizeof(resp),
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
           read_request(fd, head, sizeof(head)));
  ck_assert(th_write_all(fd, resp, strlen(resp)));
  if (server_first) {
    raw_send_chunked(fd, 0x88, "\x0f\xa1", 2, false, 0); /* 4001 */
    read_masked(fd, &b0, p, 2);                          /* the echo */
    ck_assert_uint_eq(b0, 0x88);
    ck_assert_int_eq(p[0] << 8 | p[1], 4001);
  } else {
    ck_assert_int_eq(read_close(fd), 1000);
    raw_send_chunked(fd, 0x88, "\x03\xe8", 2, false, 0);
  }
  if (server_closes) {
    /* The client keeps TCP open: no FIN within 300 ms. */
    pf = (struct pollfd){.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, 300), 0);
    ck_assert_int_eq(th_ld(&r.closes), 0);
    close(fd);
  } else {
    ck_assert_msg(th_wait_eof(fd, 10000), "the client never closed");
    close(fd);
  }
  close(lfd);
  client_join(&r);
  ck_assert_int_eq(r.closes, 1);
  ck_assert_int_eq(r.close_code, server_first ? 4001 : 1000);
}

START_TEST(test_close_waits_for_server)
{
  close_wait_case(false, true);
  close_wait_case(true, true);
  close_wait_case(false, false);
  close_wait_case(true, false);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"echo-gev-server", test_echo_with_gev_server, 60},
      {"full-duplex-gev-peers", test_full_duplex_gev_peers, 60},
      {"refused", test_refused, 30},
      {"bad-urls", test_bad_urls, 10},
      {"raw-good", test_raw_good, 30},
      {"raw-bad-handshake", test_raw_bad_accept, 30},
      {"handshake-timeout", test_handshake_timeout, 30},
      {"loop-freed-unrun", test_loop_freed_unrun, 30},
      {"raw-masked-frame", test_raw_masked_frame, 30},
      {"close-waits-for-server", test_close_waits_for_server, 60},
  };
  return th_run(th_suite("ws-client", cases, sizeof(cases) / sizeof(cases[0])));
}
