/* test-ws-frame.c - the WebSocket building blocks with no socket: SHA-1
 * (RFC 3174 vectors), base64 (RFC 4648 vectors), the accept key of RFC
 * 6455's example, frame headers, masking, UTF-8 and close codes. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "helpers.h"
#include "sha1.h"
#include "ws-frame.h"
#include "ws-internal.h"

static void sha1_hex(const void *p, size_t n, size_t repeat, char out[41])
{
  unsigned char d[GEV__SHA1_LEN];
  gev__sha1 s;

  gev__sha1_init(&s);
  for (size_t i = 0; i < repeat; i++)
    gev__sha1_update(&s, p, n);
  gev__sha1_final(&s, d);
  for (int i = 0; i < GEV__SHA1_LEN; i++)
    sprintf(out + 2 * i, "%02X", d[i]);
}

/* RFC 3174 section 7.3's four tests. */
START_TEST(test_sha1_rfc3174)
{
  static const struct {
    const char *in;
    size_t repeat;
    const char *hex;
  } v[] = {
      {"abc", 1, "A9993E364706816ABA3E25717850C26C9CD0D89D"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
       "84983E441C3BD26EBAAE4AA1F95129E5E54670F1"},
      {"a", 1000000, "34AA973CD4C4DAA4F61EEB2BDBAD27316534016F"},
      {"0123456701234567012345670123456701234567012345670123456701234567", 10,
       "DEA356A2CDDD90C7A7ECEDC5EBB563934F460452"},
  };
  char hex[41];

  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    sha1_hex(v[i].in, strlen(v[i].in), v[i].repeat, hex);
    ck_assert_str_eq(hex, v[i].hex);
  }
  sha1_hex("", 0, 1, hex); /* FIPS 180's empty message */
  ck_assert_str_eq(hex, "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709");
}
END_TEST

/* RFC 4648 section 10, both ways, and what the strict decoder refuses. */
START_TEST(test_base64_rfc4648)
{
  static const char *plain[] = {"",     "f",     "fo",    "foo",
                                "foob", "fooba", "foobar"};
  static const char *coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  static const char *bad[] = {
      "Zg=", "Zg==Zg==", "Z===", "Zh==", "Zm9=", "Zm 9v", "Zm9v!A==", "=Zm9"};
  char enc[32];
  unsigned char dec[32];

  for (int i = 0; i < 7; i++) {
    ck_assert_uint_eq(gev__b64_encode(plain[i], strlen(plain[i]), enc),
                      strlen(coded[i]));
    ck_assert_str_eq(enc, coded[i]);
    long n = gev__b64_decode(coded[i], strlen(coded[i]), dec, sizeof(dec));
    ck_assert_int_eq(n, (long)strlen(plain[i]));
    ck_assert(memcmp(dec, plain[i], (size_t)n) == 0);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ck_assert_int_eq(gev__b64_decode(bad[i], strlen(bad[i]), dec, 32), -1);
  ck_assert_int_eq(gev__b64_decode("Zm9vYmFy", 8, dec, 5), -1); /* room */
}
END_TEST

/* RFC 6455 1.3's example key and accept value. */
START_TEST(test_accept_key)
{
  char out[29];

  gev__ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
  ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

/* Every length class round-trips, and every prefix of a header asks for
 * more instead of reading past it. */
START_TEST(test_header_roundtrip)
{
  static const uint64_t lens[] = {
      0, 1, 125, 126, 127, 65535, 65536, 1 << 20, UINT32_MAX + 5ull};
  unsigned char hb[GEV__WS_MAX_HEADER], mask[4] = {1, 2, 3, 4};

  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    for (int m = 0; m < 2; m++) {
      size_t n = gev__ws_build_header(hb, 2, true, lens[i], m ? mask : NULL);
      gev__ws_header h;

      for (size_t k = 0; k < n; k++) {
        unsigned char *cut = malloc(k ? k : 1); /* ASan sees an overread */
        memcpy(cut, hb, k);
        ck_assert_int_eq(gev__ws_parse_header(cut, k, &h), 0);
        free(cut);
      }
      ck_assert_int_eq(gev__ws_parse_header(hb, n, &h), (int)n);
      ck_assert(h.len == lens[i]);
      ck_assert(h.fin && h.opcode == 2 && h.masked == (m == 1));
      ck_assert_uint_eq(n, 2 + (lens[i] > 125 ? 2 : 0) +
                               (lens[i] > 65535 ? 6 : 0) + (m ? 4 : 0));
      if (m)
        ck_assert(memcmp(h.mask, mask, 4) == 0);
    }
  }
}
END_TEST

START_TEST(test_header_refusals)
{
  gev__ws_header h;
  unsigned char rsv1[] = {0xc1, 0x00}, rsv3[] = {0x91, 0x00};
  unsigned char op3[] = {0x83, 0x00}, opb[] = {0x8b, 0x00};
  unsigned char frag_ping[] = {0x09, 0x00}, long_ping[] = {0x89, 126, 0, 126};
  unsigned char top_bit[] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
  unsigned char ok[] = {0x82, 127,  0x7f, 0xff, 0xff,
                        0xff, 0xff, 0xff, 0xff, 0xff};

  ck_assert_int_eq(gev__ws_parse_header(rsv1, 2, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(rsv3, 2, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(op3, 2, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(opb, 2, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(frag_ping, 2, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(long_ping, 4, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(top_bit, 10, &h), -1002);
  ck_assert_int_eq(gev__ws_parse_header(ok, 10, &h), 10);
  ck_assert(h.len == INT64_MAX);
  /* 5.2: a length in more bytes than it needs. */
  {
    unsigned char l16_125[] = {0x82, 126, 0, 125};
    unsigned char l16_0[] = {0x82, 126, 0, 0};
    unsigned char l16_126[] = {0x82, 126, 0, 126};
    unsigned char l64_65535[] = {0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char l64_1[] = {0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1};
    unsigned char l64_65536[] = {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0};

    ck_assert_int_eq(gev__ws_parse_header(l16_125, 4, &h), -1002);
    ck_assert_int_eq(gev__ws_parse_header(l16_0, 4, &h), -1002);
    ck_assert_int_eq(gev__ws_parse_header(l64_65535, 10, &h), -1002);
    ck_assert_int_eq(gev__ws_parse_header(l64_1, 10, &h), -1002);
    ck_assert_int_eq(gev__ws_parse_header(l16_126, 4, &h), 4);
    ck_assert(h.len == 126);
    ck_assert_int_eq(gev__ws_parse_header(l64_65536, 10, &h), 10);
    ck_assert(h.len == 65536);
  }
}
END_TEST

/* The header at the front of a ring buffer that wraps inside it, at every
 * split point: gev__ws_peek_header reads it across the wrap (the input
 * of a connection wraps when a read fills it to its end). */
START_TEST(test_peek_header_wrapped)
{
  unsigned char hb[GEV__WS_MAX_HEADER], mask[4] = {9, 8, 7, 6}, fill[64] = {0};
  size_t n = gev__ws_build_header(hb, 2, true, 70000, mask);

  ck_assert_uint_eq(n, 14);
  for (size_t k = 0; k <= n; k++) {
    ringbuffer *rb = ringbuffer_new(64);
    size_t cap = ringbuffer_cap(rb);
    struct iovec seg[2];
    gev__ws_header h;

    /* Front at cap - k: the header's first k bytes end the ring (one
     * filler byte stays until the header is in: an empty ring rewinds). */
    ck_assert_int_eq(ringbuffer_write(rb, fill, cap - k), 0);
    ringbuffer_retrieve(rb, cap - k - 1);
    ck_assert_int_eq(ringbuffer_write(rb, hb, n), 0);
    ringbuffer_retrieve(rb, 1);
    ck_assert_uint_eq(ringbuffer_cap(rb), cap); /* no growth: it wraps */
    ringbuffer_peek(rb, n, seg);
    if (k > 0 && k < n)
      ck_assert_uint_eq(seg[0].iov_len, k);
    ck_assert_int_eq(gev__ws_peek_header(rb, &h, NULL, NULL), (int)n);
    ck_assert(h.len == 70000 && h.masked && h.fin && h.opcode == 2);
    ck_assert(memcmp(h.mask, mask, 4) == 0);
    /* Short of one byte: more is needed, across the wrap too. */
    ringbuffer_retrieve_all(rb);
    ck_assert_int_eq(ringbuffer_write(rb, fill, cap - k), 0);
    ringbuffer_retrieve(rb, cap - k - 1);
    ck_assert_int_eq(ringbuffer_write(rb, hb, n - 1), 0);
    ringbuffer_retrieve(rb, 1);
    ck_assert_int_eq(gev__ws_peek_header(rb, &h, NULL, NULL), 0);
    ringbuffer_free(rb);
  }
}
END_TEST

/* Unmasking in pieces at any offset equals unmasking at once. */
START_TEST(test_unmask_pieces)
{
  unsigned char a[100], b[100], mask[4] = {0x37, 0xfa, 0x21, 0x3d};

  for (int i = 0; i < 100; i++)
    a[i] = b[i] = (unsigned char)(i * 7);
  gev__ws_unmask(a, 100, mask, 0);
  for (size_t cut = 0; cut <= 100; cut++) {
    unsigned char c[100];

    memcpy(c, b, 100);
    gev__ws_unmask(c, cut, mask, 0);
    gev__ws_unmask(c + cut, 100 - cut, mask, cut & 3);
    ck_assert(memcmp(a, c, 100) == 0);
  }
  for (int i = 0; i < 100; i++)
    ck_assert_uint_eq(a[i], b[i] ^ mask[i % 4]);
}
END_TEST

/* Valid and invalid UTF-8 (the classes of Autobahn's 6.x cases), whole
 * and fed one byte at a time; an invalid one fails at its first bad byte. */
START_TEST(test_utf8)
{
  static const struct {
    const char *s;
    int bad_at; /* -1: valid; -2: valid prefix, incomplete at the end */
  } v[] = {
      {"", -1},
      {"hello", -1},
      {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", -1}, /* kosme */
      {"\xf0\x9f\x98\x80", -1},
      {"\xf4\x8f\xbf\xbf", -1}, /* U+10FFFF */
      {"\xed\x9f\xbf", -1},     /* U+D7FF */
      {"\xee\x80\x80", -1},     /* U+E000 */
      {"\xef\xbf\xbf", -1},     /* U+FFFF: a noncharacter, valid */
      {"\xf4\x90\x80\x80", 1},  /* past U+10FFFF */
      {"\xed\xa0\x80", 1},      /* surrogate U+D800 */
      {"\xc0\xaf", 0},          /* overlong '/' */
      {"\xe0\x80\xaf", 1},      /* overlong */
      {"\xf0\x80\x80\xaf", 1},  /* overlong */
      {"\x80", 0},              /* lone continuation */
      {"\xfe", 0},
      {"\xff", 0},
      {"a\xce\xba\xe1\xbd", -2}, /* cut inside a character */
      {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
       "edited",
       12},
  };

  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    const unsigned char *p = (const unsigned char *)v[i].s;
    size_t n = strlen(v[i].s);
    gev__utf8 u = {0};
    int failed = -1;

    ck_assert_msg(gev__utf8_valid(p, n) == (v[i].bad_at == -1), "case %zu", i);
    for (size_t k = 0; k < n && failed < 0; k++)
      if (!gev__utf8_feed(&u, p + k, 1))
        failed = (int)k;
    if (v[i].bad_at >= 0)
      ck_assert_msg(failed == v[i].bad_at, "case %zu failed at %d", i, failed);
    else
      ck_assert_msg(failed < 0 && gev__utf8_complete(&u) == (v[i].bad_at == -1),
                    "case %zu", i);
  }
}
END_TEST

START_TEST(test_close_codes)
{
  static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                  1010, 1011, 3000, 3999, 4000, 4999};
  static const unsigned bad[] = {0,    999,  1004, 1005, 1006, 1015,
                                 1016, 1100, 2000, 2999, 5000, 65535};

  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    ck_assert_msg(gev__ws_close_code_ok(good[i]), "%u", good[i]);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ck_assert_msg(!gev__ws_close_code_ok(bad[i]), "%u", bad[i]);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"sha1", test_sha1_rfc3174, 30},
      {"base64", test_base64_rfc4648, 10},
      {"accept-key", test_accept_key, 10},
      {"header-roundtrip", test_header_roundtrip, 30},
      {"peek-header-wrapped", test_peek_header_wrapped, 30},
      {"header-refusals", test_header_refusals, 10},
      {"unmask", test_unmask_pieces, 10},
      {"utf8", test_utf8, 10},
      {"close-codes", test_close_codes, 10},
  };
  return th_run(th_suite("ws-frame", cases, sizeof(cases) / sizeof(cases[0])));
}
