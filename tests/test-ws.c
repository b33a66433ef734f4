/* test-ws.c - the WebSocket server against a raw-socket peer: a
 * conformance suite over the case groups of the Autobahn|Testsuite
 * fuzzing client (1 framing, 2 pings and pongs, 3 reserved bits, 4
 * opcodes, 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits), the
 * opening handshake of RFC 6455 4.2, the upgrade from an HTTP handler, and
 * the library's own promises (sends from any thread, backpressure,
 * keepalive, shutdown). */
#include <errno.h>
#include <pthread.h>

#include "ws-raw.h"

#include <gev/ws.h>

/* ---- the server under test ------------------------------------------- */

static int closes, last_code, opens, messages;
static char last_reason[128];
static gev_ws *last_ws; /* referenced in on_open, for the any-thread tests */

static void echo_open(gev_ws *ws)
{
  th_inc(&opens);
  if (strcmp(gev_ws_path(ws), "/keep") == 0) {
    gev_ws_ref(ws);
    __atomic_store_n(&last_ws, ws, __ATOMIC_SEQ_CST);
  }
}

static void echo_message(gev_ws *ws, int op, const void *p, size_t n)
{
  th_inc(&messages);
  /* /double answers twice: replies outgrow the input, so only the
   * library's pause at half the output cap keeps every send accepted. */
  for (int k = strcmp(gev_ws_path(ws), "/double") ? 1 : 2; k > 0; k--) {
    if (op == GEV_WS_TEXT || op == GEV_WS_BINARY) {
      int r = gev_ws_send(ws, op, p, n);
      ck_assert_msg(r == 0 || r == -ENOTCONN, "echo: %s", gev_strerror(r));
    }
  }
}

/* The strings the callbacks leave for the test thread; several loops
 * write them. */
static pthread_mutex_t strings_mu = PTHREAD_MUTEX_INITIALIZER;

static void echo_close(gev_ws *ws, int code, const char *reason)
{
  (void)ws;
  pthread_mutex_lock(&strings_mu);
  snprintf(last_reason, sizeof(last_reason), "%s", reason);
  pthread_mutex_unlock(&strings_mu);
  th_st(&last_code, code);
  th_inc(&closes);
}

static const gev_ws_handler echo = {
    .on_open = echo_open, .on_message = echo_message, .on_close = echo_close};

typedef struct ws_srv {
  gev_server *s;
  int port;
  pthread_t t;
} ws_srv;

static void *srv_main(void *arg)
{
  ws_srv *w = arg;

  gev_server_start(w->s);
  return NULL;
}

static ws_srv *srv_start(const gev_ws_handler *h, const gev_ws_options *wo,
                         size_t max_buffer)
{
  ws_srv *w = calloc(1, sizeof(*w));
  gev_options opt = {
      .address = "127.0.0.1:0", .num_loops = 2, .max_buffer = max_buffer};

  closes = last_code = opens = messages = 0;
  ck_assert_int_eq(gev_ws_server_new(&w->s, h, wo, &opt), 0);
  w->port = gev_server_port(w->s);
  ck_assert_int_eq(pthread_create(&w->t, NULL, srv_main, w), 0);
  return w;
}

static void srv_stop(ws_srv *w)
{
  gev_server_stop(w->s);
  th_join(w->t, 20);
  gev_ws_server_free(w->s);
  free(w);
}

static ws_srv *echo_start(void)
{
  return srv_start(&echo, NULL, 0);
}

/* The server answers, then its on_close reports @p code. */
static void fails_with(int fd, int code)
{
  raw_expect_close(fd, code);
  ck_assert(th_wait_int(&closes, 1, 10000));
  ck_assert_int_eq(th_ld(&last_code), code);
}

static unsigned char *pattern(size_t n)
{
  unsigned char *p = malloc(n ? n : 1);

  for (size_t i = 0; i < n; i++)
    p[i] = (unsigned char)('a' + i % 26);
  return p;
}

/* ---- 1: framing ------------------------------------------------------- */

START_TEST(test_framing_lengths)
{
  static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 1 << 20};
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    unsigned char *p = pattern(lens[i]);

    raw_send(fd, 0x81, p, lens[i]);
    raw_expect(fd, 0x81, p, lens[i]);
    raw_send(fd, 0x82, p, lens[i]);
    raw_expect(fd, 0x82, p, lens[i]);
    free(p);
  }
  raw_send(fd, 0x88, "\x03\xe8", 2);
  raw_expect_close(fd, 1000);
  ck_assert(th_wait_int(&closes, 1, 10000));
  ck_assert_int_eq(th_ld(&last_code), 1000);
  srv_stop(w);
}
END_TEST

/* Autobahn 1.1.8 / 1.2.8: every frame written in small pieces, down to a
 * byte at a time (header and payload split at every point). */
START_TEST(test_framing_chunked)
{
  static const size_t lens[] = {0, 1, 125, 126, 127, 300, 65535, 65536};
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    unsigned char *p = pattern(lens[i]);
    size_t chunk = lens[i] > 1000 ? 997 : 1;

    raw_send_chunked(fd, 0x82, p, lens[i], true, chunk);
    raw_expect(fd, 0x82, p, lens[i]);
    free(p);
  }
  /* Many frames in one write. */
  {
    unsigned char all[64 * 20];
    size_t len, used = 0;

    for (int i = 0; i < 64; i++) {
      unsigned char *f = raw_frame(0x81, "hello", 5, true, &len);
      memcpy(all + used, f, len);
      used += len;
      free(f);
    }
    ck_assert(th_write_all(fd, all, used));
    for (int i = 0; i < 64; i++)
      raw_expect(fd, 0x81, "hello", 5);
  }
  close(fd);
  srv_stop(w);
}
END_TEST

/* A stream of frames of many lengths written in pieces of 1001 bytes that
 * split headers and payloads anywhere, each echo read as soon as its frame
 * is wholly written: `in` is never drained to empty (it restarts at 0
 * then), so it wraps again and again with frame headers across its end,
 * and each must still parse (a header is read in place unless it wraps). */
START_TEST(test_framing_stream)
{
  enum { FRAMES = 4000 };
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");
  unsigned char *p = pattern(300), *all = malloc(FRAMES * 314);
  size_t *end = malloc(FRAMES * sizeof(*end)), used = 0, k = 0;

  for (size_t i = 0; i < FRAMES; i++) {
    size_t len;
    unsigned char *f = raw_frame(0x82, p, (i * 37) % 300, true, &len);

    memcpy(all + used, f, len);
    end[i] = used += len;
    free(f);
  }
  for (size_t off = 0; off < used;) {
    size_t piece = used - off < 1001 ? used - off : 1001;

    ck_assert(th_write_all(fd, all + off, piece));
    off += piece;
    for (; k < FRAMES && end[k] <= off; k++)
      raw_expect(fd, 0x82, p, (k * 37) % 300);
  }
  ck_assert_uint_eq(k, FRAMES);
  free(end);
  free(all);
  free(p);
  close(fd);
  srv_stop(w);
}
END_TEST

/* ---- 2: pings and pongs ----------------------------------------------- */

START_TEST(test_ping_pong)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");
  unsigned char p125[125];

  memset(p125, 0xfe, sizeof(p125));
  raw_send(fd, 0x89, "", 0);
  raw_expect(fd, 0x8a, "", 0);
  raw_send(fd, 0x89, "hello", 5);
  raw_expect(fd, 0x8a, "hello", 5);
  raw_send(fd, 0x89, p125, 125);
  raw_expect(fd, 0x8a, p125, 125);
  raw_send_chunked(fd, 0x89, "bytewise", 8, true, 1);
  raw_expect(fd, 0x8a, "bytewise", 8);
  raw_send(fd, 0x8a, "unsolicited", 11); /* 2.7: ignored */
  for (int i = 0; i < 10; i++)           /* 2.10 */
    raw_send(fd, 0x89, "x", 1);
  for (int i = 0; i < 10; i++)
    raw_expect(fd, 0x8a, "x", 1);
  raw_send(fd, 0x81, "after", 5);
  raw_expect(fd, 0x81, "after", 5);
  /* 2.5: a ping of 126 bytes fails the connection. */
  {
    unsigned char p126[126] = {0};
    raw_send(fd, 0x89, p126, 126);
  }
  fails_with(fd, 1002);
  srv_stop(w);
}
END_TEST

/* ---- 3 and 4: reserved bits and opcodes ------------------------------- */

static void fails_after(unsigned b0, const void *p, size_t n, bool mask,
                        int code)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  raw_send(fd, 0x81, "ok", 2);
  raw_expect(fd, 0x81, "ok", 2);
  raw_send_chunked(fd, b0, p, n, mask, 0);
  fails_with(fd, code);
  ck_assert_int_eq(th_ld(&messages), 1); /* the bad frame was not shown */
  srv_stop(w);
}

START_TEST(test_reserved_bits)
{
  for (unsigned rsv = 1; rsv < 8; rsv++)
    fails_after(0x81 | rsv << 4, "rsv", 3, true, 1002);
  fails_after(0x89 | 0x40, "", 0, true, 1002); /* on a ping */
}
END_TEST

START_TEST(test_opcodes)
{
  static const unsigned ops[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};

  for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
    fails_after(0x80 | ops[i], "op", 2, true, 1002);
}
END_TEST

START_TEST(test_unmasked_refused)
{
  fails_after(0x81, "plain", 5, false, 1002);
}
END_TEST

/* 5.2: a payload length in more bytes than needed fails with 1002. */
static void fails_on_raw(const unsigned char *f, size_t n)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  raw_send(fd, 0x81, "ok", 2);
  raw_expect(fd, 0x81, "ok", 2);
  ck_assert(th_write_all(fd, f, n));
  fails_with(fd, 1002);
  ck_assert_int_eq(th_ld(&messages), 1); /* the bad frame was not shown */
  srv_stop(w);
}

START_TEST(test_non_minimal_length)
{
  /* 126 for 5 bytes, 127 for 5 bytes, 127 for 65535 bytes; masked with a
   * zero key, so the payload is as written. */
  static const unsigned char l16[] = {0x82, 0x80 | 126, 0,   5,   0,   0,  0,
                                      0,    'a',        'b', 'c', 'd', 'e'};
  static const unsigned char l64[] = {0x82, 0x80 | 127, 0,   0,   0,  0, 0,
                                      0,    0,          5,   0,   0,  0, 0,
                                      'a',  'b',        'c', 'd', 'e'};
  static const unsigned char l64big[] = {0x82, 0x80 | 127, 0,    0, 0, 0, 0,
                                         0,    0xff,       0xff, 0, 0, 0, 0};

  fails_on_raw(l16, sizeof(l16));
  fails_on_raw(l64, sizeof(l64));
  fails_on_raw(l64big, sizeof(l64big));
}
END_TEST

/* ---- 5: fragmentation ------------------------------------------------- */

START_TEST(test_fragmentation)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  /* 5.3-5.5: a text message in two and in many fragments. */
  raw_send(fd, 0x01, "frag", 4);
  raw_send(fd, 0x80, "ment", 4);
  raw_expect(fd, 0x81, "fragment", 8);
  raw_send(fd, 0x02, "a", 1);
  for (int i = 0; i < 20; i++)
    raw_send(fd, 0x00, "b", 1);
  raw_send(fd, 0x80, "c", 1);
  raw_expect(fd, 0x82, "abbbbbbbbbbbbbbbbbbbbc", 22);
  /* 5.6-5.8: pings between fragments are answered at once. */
  raw_send(fd, 0x01, "one ", 4);
  raw_send(fd, 0x89, "ping", 4);
  raw_expect(fd, 0x8a, "ping", 4);
  raw_send(fd, 0x8a, "pong", 4);
  raw_send(fd, 0x80, "two", 3);
  raw_expect(fd, 0x81, "one two", 7);
  /* 5.18-5.20: empty fragments, byte-wise delivery of the whole set. */
  raw_send(fd, 0x01, "", 0);
  raw_send_chunked(fd, 0x00, "", 0, true, 1);
  raw_send_chunked(fd, 0x89, "p", 1, true, 1);
  raw_send_chunked(fd, 0x00, "xy", 2, true, 1);
  raw_send_chunked(fd, 0x80, "", 0, true, 1);
  raw_expect(fd, 0x8a, "p", 1);
  raw_expect(fd, 0x81, "xy", 2);
  /* 5.1-5.2: a fragmented ping fails the connection. */
  raw_send(fd, 0x09, "frag", 4);
  fails_with(fd, 1002);
  srv_stop(w);
}
END_TEST

START_TEST(test_fragment_sequence_errors)
{
  /* 5.9-5.12: a continuation with nothing to continue. */
  fails_after(0x80, "cont", 4, true, 1002);
  fails_after(0x00, "cont", 4, true, 1002);
  /* 5.17-ish: a new data frame inside a fragmented message. */
  {
    ws_srv *w = echo_start();
    int fd = raw_open(w->port, "/");

    raw_send(fd, 0x01, "start", 5);
    raw_send(fd, 0x81, "again", 5);
    fails_with(fd, 1002);
    srv_stop(w);
  }
}
END_TEST

/* ---- 6: UTF-8 --------------------------------------------------------- */

static const char kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

/* 6.2-6.4: a valid text split into two fragments at every byte, and sent
 * a byte at a time as one frame. */
START_TEST(test_utf8_valid_split_everywhere)
{
  static const char *texts[] = {
      kosme, "\xf0\x9f\x98\x80 and \xe2\x82\xac and \xc2\xa2",
      "\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"};
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
    size_t n = strlen(texts[t]);

    for (size_t cut = 0; cut <= n; cut++) {
      raw_send(fd, 0x01, texts[t], cut);
      raw_send(fd, 0x80, texts[t] + cut, n - cut);
      raw_expect(fd, 0x81, texts[t], n);
    }
    raw_send_chunked(fd, 0x81, texts[t], n, true, 1);
    raw_expect(fd, 0x81, texts[t], n);
  }
  close(fd);
  srv_stop(w);
}
END_TEST

/* 6.3-6.21: invalid sequences fail with 1007, whether whole, split in two
 * fragments at any point, or the rest never sent: the first fragment that
 * holds the bad byte is enough (fail fast). */
START_TEST(test_utf8_invalid_everywhere)
{
  static const char *bad[] = {
      ("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
       "edited"),
      "\xc0\xaf",
      "\xe0\x80\xaf",
      "\xf4\x90\x80\x80",
      "\xed\xbf\xbf",
      "\x80",
      "\xfe",
      "\xff",
      "ab\xc2",
      "\xf0\x9f\x98"};
  for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
    size_t n = strlen(bad[b]);

    for (size_t cut = 0; cut <= n; cut++) {
      ws_srv *w = echo_start();
      int fd = raw_open(w->port, "/");

      raw_send(fd, 0x01, bad[b], cut);
      if (cut < n || b >= 8) /* the last two are only bad once they end */
        raw_send(fd, 0x80, bad[b] + cut, n - cut);
      fails_with(fd, 1007);
      ck_assert_int_eq(th_ld(&messages), 0);
      srv_stop(w);
    }
    /* Whole, in one frame, after a good one in the same write: the sweep
     * over whole small frames checks them too. */
    {
      ws_srv *w = echo_start();
      int fd = raw_open(w->port, "/");
      size_t n1, n2;
      unsigned char *f1 = raw_frame(0x81, "ok", 2, true, &n1);
      unsigned char *f2 = raw_frame(0x81, bad[b], n, true, &n2);
      unsigned char *both = malloc(n1 + n2);

      memcpy(both, f1, n1);
      memcpy(both + n1, f2, n2);
      ck_assert(th_write_all(fd, both, n1 + n2));
      raw_expect(fd, 0x81, "ok", 2);
      fails_with(fd, 1007);
      ck_assert_int_eq(th_ld(&messages), 1);
      srv_stop(w);
      free(f1);
      free(f2);
      free(both);
    }
  }
}
END_TEST

/* Fail fast: the bad byte fails the connection before the message ends. */
START_TEST(test_utf8_fail_fast)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  raw_send(fd, 0x01, "good \xed\xa0\x80", 8); /* FIN not set */
  fails_with(fd, 1007);
  srv_stop(w);
  /* Inside one long frame still arriving: its first half is enough. */
  {
    size_t n = 100000, len;
    unsigned char *p = pattern(n), *f;

    p[10] = 0xff;
    w = echo_start();
    fd = raw_open(w->port, "/");
    f = raw_frame(0x81, p, n, true, &len);
    ck_assert(th_write_all(fd, f, 1000));
    fails_with(fd, 1007);
    free(f);
    free(p);
    srv_stop(w);
  }
}
END_TEST

/* ---- 7: close handling ------------------------------------------------ */

static void close_with(const void *payload, size_t n, int want_code)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  raw_send(fd, 0x88, payload, n);
  if (want_code == 1002 || want_code == 1007) {
    fails_with(fd, want_code);
  } else {
    raw_expect_close(fd, n ? want_code : -1); /* the code echoed */
    ck_assert(th_wait_int(&closes, 1, 10000));
    ck_assert_int_eq(th_ld(&last_code), n ? want_code : 1005);
  }
  srv_stop(w);
}

START_TEST(test_close_codes)
{
  static const int good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                             1010, 1011, 3000, 3999, 4000, 4999};
  static const int bad[] = {0,    999,  1004, 1005, 1006, 1015,
                            1016, 1100, 2000, 2999, 5000, 65535};
  unsigned char p[2];

  close_with("", 0, 1005);     /* 7.3.1: no payload */
  close_with("\x03", 1, 1002); /* 7.3.2: one byte */
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    p[0] = (unsigned char)(good[i] >> 8);
    p[1] = (unsigned char)good[i];
    close_with(p, 2, good[i]);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    p[0] = (unsigned char)(bad[i] >> 8);
    p[1] = (unsigned char)bad[i];
    close_with(p, 2, 1002);
  }
}
END_TEST

START_TEST(test_close_reasons)
{
  char p[125];

  /* 7.3.4-5: a reason, up to the 123 bytes that fit. */
  memcpy(p,
         "\x03\xe8"
         "bye",
         5);
  close_with(p, 5, 1000);
  pthread_mutex_lock(&strings_mu);
  ck_assert_str_eq(last_reason, "bye");
  pthread_mutex_unlock(&strings_mu);
  memcpy(p, "\x03\xe8", 2);
  memset(p + 2, 'r', 123);
  close_with(p, 125, 1000);
  pthread_mutex_lock(&strings_mu);
  ck_assert_uint_eq(strlen(last_reason), 123);
  pthread_mutex_unlock(&strings_mu);
  /* 7.5.1: a reason that is not UTF-8. */
  memcpy(p, "\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
         16);
  close_with(p, 16, 1007);
}
END_TEST

/* 7.1: nothing is shown after the peer's Close; the server closes TCP. */
START_TEST(test_close_then_data)
{
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");
  size_t l1, l2;
  unsigned char *a = raw_frame(0x88, "\x03\xe8", 2, true, &l1);
  unsigned char *b = raw_frame(0x81, "late", 4, true, &l2);
  unsigned char both[64];

  memcpy(both, a, l1);
  memcpy(both + l1, b, l2);
  ck_assert(th_write_all(fd, both, l1 + l2)); /* in one segment */
  raw_expect(fd, 0x88, "\x03\xe8", 2);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&closes, 1, 10000));
  ck_assert_int_eq(th_ld(&messages), 0);
  free(a);
  free(b);
  close(fd);
  srv_stop(w);
}
END_TEST

/* ---- 9 and limits ----------------------------------------------------- */

START_TEST(test_message_limit)
{
  gev_ws_options wo = {.max_message = 1000};
  unsigned char *p = pattern(2000);
  ws_srv *w = srv_start(&echo, &wo, 0);
  int fd = raw_open(w->port, "/");

  raw_send(fd, 0x82, p, 1000); /* at the limit: fine */
  raw_expect(fd, 0x82, p, 1000);
  raw_send(fd, 0x02, p, 600); /* fragments add up past it */
  raw_send(fd, 0x80, p, 401);
  fails_with(fd, 1009);
  srv_stop(w);
  /* A small limit and a small frame past it, whole in one read. */
  {
    gev_ws_options small = {.max_message = 50};

    w = srv_start(&echo, &small, 0);
    fd = raw_open(w->port, "/");
    raw_send(fd, 0x82, p, 50);
    raw_expect(fd, 0x82, p, 50);
    raw_send(fd, 0x82, p, 51);
    fails_with(fd, 1009);
    srv_stop(w);
  }
  /* The header alone is enough: a 1 GiB frame announced, nothing sent. */
  {
    unsigned char h[14] = {0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4};

    w = srv_start(&echo, &wo, 0);
    fd = raw_open(w->port, "/");
    ck_assert(th_write_all(fd, h, sizeof(h)));
    fails_with(fd, 1009);
    srv_stop(w);
  }
  /* A 64-bit length with the top bit set is not a length. */
  {
    unsigned char h[14] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};

    w = echo_start();
    fd = raw_open(w->port, "/");
    ck_assert(th_write_all(fd, h, sizeof(h)));
    fails_with(fd, 1002);
    srv_stop(w);
  }
  free(p);
}
END_TEST

/* 9.x: sixteen megabytes, the default limit, in 64 KiB frames. */
START_TEST(test_big_fragmented_message)
{
  size_t n = 16u << 20, frag = 65536;
  unsigned char *p = pattern(n), *q;
  unsigned b0;
  size_t len;
  ws_srv *w = echo_start();
  int fd = raw_open(w->port, "/");

  for (size_t off = 0; off < n; off += frag)
    raw_send(fd, (off ? 0x00 : 0x02) | (off + frag >= n ? 0x80 : 0), p + off,
             frag);
  ck_assert(raw_read(fd, &b0, &q, &len));
  ck_assert_uint_eq(b0, 0x82);
  ck_assert_uint_eq(len, n);
  ck_assert(memcmp(p, q, n) == 0);
  free(q);
  raw_send(fd, 0x02, p, 1); /* one byte more than the limit: 1009 */
  for (size_t off = 0; off < n; off += frag)
    raw_send(fd, 0x00 | (off + frag >= n ? 0x80 : 0), p + off, frag);
  fails_with(fd, 1009);
  free(p);
  srv_stop(w);
}
END_TEST

/* ---- our Close behind another thread's frame ------------------------- */

static void *send_x(void *ws)
{
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_TEXT, "x", 1), 0);
  return NULL;
}

/* "go": another thread sends "x" (its frame travels in a task of the
 * loop), then this one closes: the Close must follow "x", so it waits in
 * a task too. */
static void go_then_close(gev_ws *ws, int op, const void *p, size_t n)
{
  pthread_t t;

  (void)op;
  if (n != 2 || (memcmp(p, "go", 2) != 0 && memcmp(p, "gx", 2) != 0))
    return;
  ck_assert_int_eq(pthread_create(&t, NULL, send_x, ws), 0);
  th_join(t, 10);
  if (memcmp(p, "go", 2) == 0) /* "gx": the peer's Close will be echoed */
    ck_assert_int_eq(gev_ws_close(ws, 1000, "bye"), 0);
}

static const gev_ws_handler go_close = {.on_message = go_then_close,
                                        .on_close = echo_close};

/* The peer's next frame is in the same read as "go": its Close (both
 * Closes through: end TCP) or a protocol error (close TCP). Either must
 * wait for our queued Close; before, the connection closed first and the
 * peer got "x", then FIN, never a Close. */
static void close_behind_case(bool peer_close)
{
  ws_srv *w = srv_start(&go_close, NULL, 0);
  int fd = raw_open(w->port, "/");
  size_t n1, n2;
  unsigned char *f1 = raw_frame(0x81, "go", 2, true, &n1);
  unsigned char *f2 = peer_close ? raw_frame(0x88, "\x03\xe8", 2, true, &n2)
                                 : raw_frame(0x81, "u", 1, false, &n2);
  unsigned char both[64];

  th_reset_counters();
  th_st(&closes, 0);
  memcpy(both, f1, n1);
  memcpy(both + n1, f2, n2);
  ck_assert(th_write_all(fd, both, n1 + n2));
  raw_expect(fd, 0x81, "x", 1);
  raw_expect(fd, 0x88,
             "\x03\xe8"
             "bye",
             5);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&closes, 1, 10000));
  free(f1);
  free(f2);
  close(fd);
  srv_stop(w);
}

/* "gx" and the peer's Close in one read, no Close of ours: the echo of
 * the peer's waits behind "x", and TCP must still end once it is out. */
static void echo_behind_case(void)
{
  ws_srv *w = srv_start(&go_close, NULL, 0);
  int fd = raw_open(w->port, "/");
  size_t n1, n2;
  unsigned char *f1 = raw_frame(0x81, "gx", 2, true, &n1);
  unsigned char *f2 = raw_frame(0x88, "\x03\xe8", 2, true, &n2);
  unsigned char both[64];

  th_st(&closes, 0);
  memcpy(both, f1, n1);
  memcpy(both + n1, f2, n2);
  ck_assert(th_write_all(fd, both, n1 + n2));
  raw_expect(fd, 0x81, "x", 1);
  raw_expect(fd, 0x88, "\x03\xe8", 2);
  ck_assert(th_wait_eof(fd, 3000)); /* the close timeout is 5 s */
  ck_assert(th_wait_int(&closes, 1, 10000));
  free(f1);
  free(f2);
  close(fd);
  srv_stop(w);
}

START_TEST(test_close_behind_send)
{
  close_behind_case(true);
  close_behind_case(false);
  echo_behind_case();
}
END_TEST

/* ---- the opening handshake (RFC 6455 4.2) ------------------------------ */

static const char *offer_pick(const char *const *offered, size_t n, void *arg)
{
  (void)arg;
  for (size_t i = 0; i < n; i++)
    if (strcmp(offered[i], "superchat") == 0)
      return offered[i];
  return NULL;
}

static char seen_origin[64];

static bool origin_ok(const char *origin, void *arg)
{
  (void)arg;
  pthread_mutex_lock(&strings_mu);
  snprintf(seen_origin, sizeof(seen_origin), "%s", origin ? origin : "-");
  pthread_mutex_unlock(&strings_mu);
  return !origin || strcmp(origin, "http://evil.example") != 0;
}

static int ask(int port, const char *req, char *head, size_t cap)
{
  int fd = th_connect(port), st;

  ck_assert(fd >= 0);
  st = raw_request(fd, req, head, cap);
  close(fd);
  return st;
}

#define UPG "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: " RAW_KEY "\r\n"
#define V13 "Sec-WebSocket-Version: 13\r\n"

START_TEST(test_handshake_validation)
{
  static const struct {
    const char *req;
    int status;
  } v[] = {
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY V13 "\r\n", 101},
      {"GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\nconnection: "
       "UPGRADE\r\nsec-websocket-key: " RAW_KEY "\r\nsec-websocket-version: "
       "13\r\n\r\n",
       101},
      {"POST / HTTP/1.1\r\nHost: h\r\n" UPG KEY V13 "\r\n", 400},
      {"GET / HTTP/1.0\r\nHost: h\r\n" UPG KEY V13 "\r\n", 400},
      {"GET / HTTP/1.1\r\n" UPG KEY V13 "\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n" KEY V13 "\r\n",
       426},
      {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n" KEY V13 "\r\n",
       426},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY "\r\n", 426},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY "Sec-WebSocket-Version: 8\r\n"
       "\r\n",
       426},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG V13 "\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG
       "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" V13 "\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG
       "Sec-WebSocket-Key: not base64 at all!!!\r\n" V13 "\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY KEY V13 "\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n" UPG KEY V13 "\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.example\r\n" UPG KEY
           V13 "\r\n",
       403},
      /* The method is case-sensitive (RFC 7230 3.1.1). */
      {"get / HTTP/1.1\r\nHost: h\r\n" UPG KEY V13 "\r\n", 400},
      /* A bare LF inside a value: the offered subprotocol would carry a
       * header line of its own into the answer. */
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY V13
       "Sec-WebSocket-Protocol: superchat\nSet-Cookie: evil=1\r\n\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: h\x01\r\n" UPG KEY V13 "\r\n", 400},
  };
  gev_ws_options wo = {.select_protocol = offer_pick,
                       .check_origin = origin_ok};
  ws_srv *w = srv_start(&echo, &wo, 0);
  char head[1024];

  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    int st = ask(w->port, v[i].req, head, sizeof(head));

    ck_assert_msg(st == v[i].status, "request %zu: %d, want %d", i, st,
                  v[i].status);
    if (st == 426)
      ck_assert(strstr(head, "Sec-WebSocket-Version: 13\r\n"));
  }
  /* Subprotocols: the handler's pick is answered; Origin is shown. */
  ask(w->port,
      "GET /p HTTP/1.1\r\nHost: h\r\nOrigin: http://ok.example\r\n" UPG KEY V13
      "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
      head, sizeof(head));
  ck_assert_msg(strstr(head, "Sec-WebSocket-Protocol: superchat\r\n"), "%s",
                head);
  pthread_mutex_lock(&strings_mu);
  ck_assert_str_eq(seen_origin, "http://ok.example");
  pthread_mutex_unlock(&strings_mu);
  ask(w->port,
      "GET /p HTTP/1.1\r\nHost: h\r\n" UPG KEY V13
      "Sec-WebSocket-Protocol: chat\r\n\r\n",
      head, sizeof(head));
  ck_assert(!strstr(head, "Sec-WebSocket-Protocol"));
  pthread_mutex_lock(&strings_mu);
  ck_assert_str_eq(seen_origin, "-");
  pthread_mutex_unlock(&strings_mu);
  srv_stop(w);
}
END_TEST

/* A head past 8 KiB is refused; one that never ends is closed at the
 * handshake deadline (the close timeout). */
START_TEST(test_handshake_limits)
{
  gev_ws_options wo = {.close_timeout_ms = 300};
  ws_srv *w = srv_start(&echo, &wo, 0);
  char *big = malloc(10000), head[512];
  int fd;

  snprintf(big, 10000, "GET / HTTP/1.1\r\nHost: h\r\nX: %09000d\r\n\r\n", 0);
  ck_assert_int_eq(ask(w->port, big, head, sizeof(head)), 400);
  fd = th_connect(w->port);
  ck_assert(th_write_all(fd, "GET / HTTP/1.1\r\n", 16));
  ck_assert(th_wait_eof(fd, 5000));
  close(fd);
  ck_assert_int_eq(th_ld(&opens), 0);
  free(big);
  srv_stop(w);
}
END_TEST

/* The request and the first frames in one write. */
START_TEST(test_handshake_then_frames)
{
  ws_srv *w = echo_start();
  char req[512], head[512];
  size_t len;
  unsigned char *f = raw_frame(0x81, "early", 5, true, &len);
  int fd = th_connect(w->port), n;

  n = snprintf(req, sizeof(req),
               "GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY V13 "\r\n");
  memcpy(req + n, f, len);
  ck_assert(th_write_all(fd, req, (size_t)n + len));
  ck_assert_int_gt(raw_read_head(fd, head, sizeof(head)), 0);
  raw_expect(fd, 0x81, "early", 5);
  free(f);
  close(fd);
  srv_stop(w);
}
END_TEST

/* ---- the upgrade from an HTTP handler --------------------------------- */

static void ctx_message(gev_ws *ws, int op, const void *p, size_t n)
{
  ck_assert_str_eq(gev_ws_context(ws), "ctx");
  echo_message(ws, op, p, n);
}

static void http_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ssize_t end = ringbuffer_find(in, "\r\n\r\n", 4);
  const char *p;

  if (end < 0)
    return;
  p = ringbuffer_linearize(in, (size_t)end + 4);
  if (strncmp(p, "GET /ws ", 8) == 0) {
    static const gev_ws_handler ctx_echo = {.on_open = echo_open,
                                            .on_message = ctx_message,
                                            .on_close = echo_close};
    int r = gev_ws_upgrade(c, in, out, &ctx_echo, NULL, (void *)"ctx");
    ck_assert_int_eq(r, 0);
    return;
  }
  ringbuffer_retrieve(in, (size_t)end + 4);
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
  ringbuffer_write(out, ok, sizeof(ok) - 1);
}

START_TEST(test_upgrade_from_http)
{
  gev_handler h = {.on_message = http_message};
  gev_options opt = {.num_loops = 1};
  th_server *t;
  char req[512], head[512];
  size_t l1, l2;
  unsigned char *f1 = raw_frame(0x81, "first", 5, true, &l1);
  unsigned char *f2 = raw_frame(0x82, "second", 6, true, &l2);
  int fd, n;

  closes = opens = messages = 0;
  t = th_start(&h, &opt);
  fd = th_connect(t->port);
  /* A plain request first, then the upgrade and two frames, in one write. */
  ck_assert(th_write_all(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 27));
  ck_assert_int_gt(raw_read_head(fd, head, sizeof(head)), 0);
  ck_assert(th_read_exact(fd, head, 2));
  n = snprintf(req, sizeof(req),
               "GET /ws HTTP/1.1\r\nHost: h\r\n" UPG KEY V13 "\r\n");
  memcpy(req + n, f1, l1);
  memcpy(req + n + l1, f2, l2);
  ck_assert(th_write_all(fd, req, (size_t)n + l1 + l2));
  ck_assert_int_gt(raw_read_head(fd, head, sizeof(head)), 0);
  ck_assert_msg(strstr(head, "101 Switching Protocols"), "%s", head);
  raw_expect(fd, 0x81, "first", 5);
  raw_expect(fd, 0x82, "second", 6);
  raw_send(fd, 0x88, "\x03\xe8", 2);
  raw_expect_close(fd, 1000);
  ck_assert(th_wait_int(&closes, 1, 10000));
  ck_assert_int_eq(th_ld(&opens), 1);
  free(f1);
  free(f2);
  th_stop(t);
}
END_TEST

/* ---- sends from other threads, closing from this side ----------------- */

static gev_ws *wait_ws(void)
{
  for (int i = 0; i < 10000; i++) {
    gev_ws *ws = __atomic_load_n(&last_ws, __ATOMIC_SEQ_CST);
    if (ws)
      return ws;
    usleep(1000);
  }
  ck_abort_msg("no connection on /keep");
  return NULL;
}

START_TEST(test_send_from_thread)
{
  ws_srv *w = srv_start(&echo, NULL, 64 << 10);
  int fd = raw_open(w->port, "/keep");
  gev_ws *ws = wait_ws();
  unsigned char *big = pattern(1 << 20);

  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_TEXT, "from a thread", 13), 0);
  raw_expect(fd, 0x81, "from a thread", 13);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_PING, "p", 1), 0);
  raw_expect(fd, 0x89, "p", 1);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_BINARY, big, 1 << 20), -ENOBUFS);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_TEXT, "\xff", 1), -EINVAL);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_PING, big, 126), -EINVAL);
  ck_assert_int_eq(gev_ws_send(ws, 3, "x", 1), -EINVAL);
  ck_assert_int_eq(gev_ws_close(ws, 1005, NULL), -EINVAL);
  ck_assert_int_eq(gev_ws_close(ws, 1000, "bye"), 0);
  ck_assert_int_eq(gev_ws_close(ws, 1000, "bye"), -ENOTCONN);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_TEXT, "late", 4), -ENOTCONN);
  raw_expect(fd, 0x88,
             "\x03\xe8"
             "bye",
             5);
  /* After our Close, the peer's data frames are still delivered (ws.h:
   * the peer may have sent them before it saw our Close). */
  raw_send(fd, 0x81, "still", 5);
  ck_assert(th_wait_int(&messages, 1, 10000));
  raw_send(fd, 0x88, "\x0f\xa0", 2); /* the peer answers 4000 */
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&closes, 1, 10000));
  ck_assert_int_eq(th_ld(&last_code), 4000);
  ck_assert_int_eq(gev_ws_send(ws, GEV_WS_TEXT, "gone", 4), -ENOTCONN);
  __atomic_store_n(&last_ws, NULL, __ATOMIC_SEQ_CST);
  gev_ws_unref(ws);
  free(big);
  close(fd);
  srv_stop(w);
}
END_TEST

/* The peer never answers our Close: the close timeout ends it (1006). */
START_TEST(test_close_timeout)
{
  gev_ws_options wo = {.close_timeout_ms = 200};
  ws_srv *w = srv_start(&echo, &wo, 0);
  int fd = raw_open(w->port, "/keep");
  gev_ws *ws = wait_ws();

  ck_assert_int_eq(gev_ws_close(ws, 1000, NULL), 0);
  raw_expect(fd, 0x88, "\x03\xe8", 2);
  ck_assert(th_wait_eof(fd, 5000));
  ck_assert(th_wait_int(&closes, 1, 5000));
  ck_assert_int_eq(th_ld(&last_code), 1006);
  __atomic_store_n(&last_ws, NULL, __ATOMIC_SEQ_CST);
  gev_ws_unref(ws);
  close(fd);
  srv_stop(w);
}
END_TEST

/* Keepalive: pings come, a pong keeps the connection, a missing one ends
 * it. */
START_TEST(test_keepalive)
{
  gev_ws_options wo = {.ping_interval_ms = 100, .pong_timeout_ms = 300};
  ws_srv *w = srv_start(&echo, &wo, 0);
  int fd = raw_open(w->port, "/");
  unsigned b0;
  unsigned char *p;
  size_t n;

  for (int i = 0; i < 3; i++) {
    ck_assert(raw_read(fd, &b0, &p, &n));
    ck_assert_uint_eq(b0, 0x89);
    raw_send(fd, 0x8a, p, n);
    free(p);
  }
  ck_assert_int_eq(th_ld(&closes), 0);
  ck_assert(raw_read(fd, &b0, &p, &n)); /* not answered */
  ck_assert_uint_eq(b0, 0x89);
  free(p);
  ck_assert(th_wait_eof(fd, 5000));
  ck_assert(th_wait_int(&closes, 1, 5000));
  ck_assert_int_eq(th_ld(&last_code), 1006);
  close(fd);
  srv_stop(w);
}
END_TEST

/* gev_server_shutdown: every client gets Close 1001. */
START_TEST(test_shutdown_going_away)
{
  ws_srv *w = echo_start();
  int a = raw_open(w->port, "/"), b = raw_open(w->port, "/");

  ck_assert(th_wait_int(&opens, 2, 5000));
  ck_assert_int_eq(gev_server_shutdown(w->s, 5000), 0);
  raw_expect_close(a, 1001);
  raw_expect_close(b, 1001);
  ck_assert(th_wait_int(&closes, 2, 5000));
  ck_assert_int_eq(th_ld(&last_code), 1000); /* our answer */
  srv_stop(w);
}
END_TEST

/* Backpressure: a peer that sends and does not read stops being read
 * (the server buffers at most max_buffer each way); once it reads, every
 * echo arrives, in order. */
typedef struct writer {
  int fd;
  size_t frames, done;
} writer;

static void *write_frames(void *arg)
{
  writer *wr = arg;
  unsigned char p[4096];
  size_t len;

  for (size_t i = 0; i < wr->frames; i++) {
    memset(p, (int)(i & 0xff), sizeof(p));
    unsigned char *f = raw_frame(0x82, p, sizeof(p), true, &len);
    bool ok = th_write_all(wr->fd, f, len);
    free(f);
    if (!ok)
      break;
    __atomic_store_n(&wr->done, i + 1, __ATOMIC_SEQ_CST);
  }
  return NULL;
}

START_TEST(test_backpressure)
{
  ws_srv *w = srv_start(&echo, NULL, 64 << 10);
  writer wr = {.fd = raw_open(w->port, "/double"), .frames = 8192}; /* 32 MiB */
  pthread_t t;
  unsigned char want[4096];

  ck_assert_int_eq(pthread_create(&t, NULL, write_frames, &wr), 0);
  usleep(1000 * 1000);
  /* Stalled: far from done while nobody reads. */
  ck_assert_uint_lt(__atomic_load_n(&wr.done, __ATOMIC_SEQ_CST), wr.frames / 2);
  for (size_t i = 0; i < wr.frames; i++) {
    memset(want, (int)(i & 0xff), sizeof(want));
    raw_expect(wr.fd, 0x82, want, sizeof(want));
    raw_expect(wr.fd, 0x82, want, sizeof(want));
  }
  th_join(t, 30);
  ck_assert_uint_eq(wr.done, wr.frames);
  ck_assert_int_eq(th_ld(&messages), (int)wr.frames);
  close(wr.fd);
  srv_stop(w);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"framing-lengths", test_framing_lengths, 60},
      {"framing-chunked", test_framing_chunked, 120},
      {"framing-stream", test_framing_stream, 60},
      {"ping-pong", test_ping_pong, 60},
      {"reserved-bits", test_reserved_bits, 60},
      {"opcodes", test_opcodes, 60},
      {"unmasked", test_unmasked_refused, 30},
      {"non-minimal-length", test_non_minimal_length, 60},
      {"fragmentation", test_fragmentation, 60},
      {"fragment-sequence", test_fragment_sequence_errors, 60},
      {"utf8-valid", test_utf8_valid_split_everywhere, 60},
      {"utf8-invalid", test_utf8_invalid_everywhere, 120},
      {"utf8-fail-fast", test_utf8_fail_fast, 60},
      {"close-codes", test_close_codes, 120},
      {"close-reasons", test_close_reasons, 60},
      {"close-then-data", test_close_then_data, 60},
      {"message-limit", test_message_limit, 60},
      {"big-message", test_big_fragmented_message, 120},
      {"close-behind-send", test_close_behind_send, 30},
      {"handshake-validation", test_handshake_validation, 60},
      {"handshake-limits", test_handshake_limits, 60},
      {"handshake-then-frames", test_handshake_then_frames, 30},
      {"upgrade-from-http", test_upgrade_from_http, 30},
      {"send-from-thread", test_send_from_thread, 30},
      {"close-timeout", test_close_timeout, 30},
      {"keepalive", test_keepalive, 30},
      {"shutdown-going-away", test_shutdown_going_away, 30},
      {"backpressure", test_backpressure, 120},
  };
  return th_run(th_suite("ws", cases, sizeof(cases) / sizeof(cases[0])));
}
