/* test-addr.c - gev__addr_format, the peer and local address strings of
 * every connection, against a reference made with inet_ntop and snprintf
 * (what it used before it wrote IPv4 by hand): every octet value in every
 * position, the ports whose digit count changes, a seeded sample, IPv6
 * forms, unix paths, and every buffer size (cut and terminated as
 * snprintf does). */
#include <arpa/inet.h>
#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"
#include "helpers.h"

static const unsigned ports[] = {0,    1,    9,     10,   99,    100,  999,
                                 1000, 9999, 10000, 8080, 65534, 65535};

static void reference(const struct sockaddr *sa, char *out, size_t n)
{
  char ip[INET6_ADDRSTRLEN];

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    snprintf(out, n, "%s:%u", ip, ntohs(in->sin_port));
  } else {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
    snprintf(out, n, "[%s]:%u", ip, ntohs(in6->sin6_port));
  }
}

/* Equal to the reference at full size and at every smaller size. */
static void check_all_sizes(const struct sockaddr *sa, socklen_t len)
{
  char got[GEV__ADDR_STRLEN], want[GEV__ADDR_STRLEN];

  reference(sa, want, sizeof(want));
  gev__addr_format(sa, len, got, sizeof(got));
  ck_assert_str_eq(got, want);
  for (size_t n = 1; n <= strlen(want) + 1; n++) {
    char cut[GEV__ADDR_STRLEN], ref[GEV__ADDR_STRLEN];
    memset(cut, 'x', sizeof(cut));
    reference(sa, ref, n);
    gev__addr_format(sa, len, cut, n);
    ck_assert_str_eq(cut, ref);
    ck_assert_int_eq(cut[n], 'x'); /* nothing written past n */
  }
}

static struct sockaddr_in v4(const unsigned char b[4], unsigned port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};

  memcpy(&a.sin_addr, b, 4);
  return a;
}

START_TEST(ipv4_every_octet_and_port_width)
{
  for (int pos = 0; pos < 4; pos++)
    for (unsigned v = 0; v < 256; v++)
      for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
        unsigned char b[4] = {127, 0, 0, 1};
        struct sockaddr_in a;
        char got[GEV__ADDR_STRLEN], want[GEV__ADDR_STRLEN];
        b[pos] = (unsigned char)v;
        a = v4(b, ports[p]);
        reference((struct sockaddr *)&a, want, sizeof(want));
        gev__addr_format((struct sockaddr *)&a, sizeof(a), got, sizeof(got));
        ck_assert_str_eq(got, want);
      }
}
END_TEST

START_TEST(ipv4_sample_and_sizes)
{
  uint32_t x = 12345;

  for (int i = 0; i < 20000; i++) {
    unsigned char b[4];
    struct sockaddr_in a;
    x = x * 1103515245u + 12345u;
    memcpy(b, &x, 4);
    a = v4(b, (x >> 7) & 0xffff);
    if (i < 200)
      check_all_sizes((struct sockaddr *)&a, sizeof(a));
    else {
      char got[GEV__ADDR_STRLEN], want[GEV__ADDR_STRLEN];
      reference((struct sockaddr *)&a, want, sizeof(want));
      gev__addr_format((struct sockaddr *)&a, sizeof(a), got, sizeof(got));
      ck_assert_str_eq(got, want);
    }
  }
  {
    unsigned char b[4] = {255, 255, 255, 255};
    struct sockaddr_in a = v4(b, 65535);
    check_all_sizes((struct sockaddr *)&a, sizeof(a));
  }
}
END_TEST

START_TEST(ipv6_forms)
{
  static const char *const addrs[] = {
      "::",
      "::1",
      "::ffff:127.0.0.1",
      "fe80::1",
      "2001:db8::8",
      "2001:db8:1:2:3:4:5:6",
      "1::",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"};

  for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++)
    for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
      struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                               .sin6_port = htons((uint16_t)ports[p])};
      ck_assert_int_eq(inet_pton(AF_INET6, addrs[i], &a.sin6_addr), 1);
      check_all_sizes((struct sockaddr *)&a, sizeof(a));
    }
}
END_TEST

START_TEST(unix_and_malformed)
{
  struct sockaddr_un u = {.sun_family = AF_UNIX};
  struct sockaddr_in a = {.sin_family = AF_INET};
  char got[GEV__ADDR_STRLEN] = "x";
  socklen_t base = offsetof(struct sockaddr_un, sun_path);

  strcpy(u.sun_path, "/tmp/gev.sock");
  gev__addr_format((struct sockaddr *)&u, sizeof(u), got, sizeof(got));
  ck_assert_str_eq(got, "/tmp/gev.sock");
  memcpy(u.sun_path, "\0abstract", 9);
  gev__addr_format((struct sockaddr *)&u, base + 9, got, sizeof(got));
  ck_assert_str_eq(got, "@abstract");
  gev__addr_format((struct sockaddr *)&u, base, got, sizeof(got));
  ck_assert_str_eq(got, ""); /* unnamed */
  /* Too short for its family, none at all, no room: empty or untouched. */
  strcpy(got, "x");
  gev__addr_format((struct sockaddr *)&a, sizeof(a) - 1, got, sizeof(got));
  ck_assert_str_eq(got, "");
  strcpy(got, "x");
  gev__addr_format(NULL, 0, got, sizeof(got));
  ck_assert_str_eq(got, "");
  strcpy(got, "x");
  gev__addr_format((struct sockaddr *)&a, sizeof(a), got, 0);
  ck_assert_str_eq(got, "x");
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"ipv4_every_octet_and_port_width", ipv4_every_octet_and_port_width, 60},
      {"ipv4_sample_and_sizes", ipv4_sample_and_sizes, 60},
      {"ipv6_forms", ipv6_forms, 60},
      {"unix_and_malformed", unix_and_malformed, 60},
  };
  return th_run(th_suite("addr", cases, sizeof(cases) / sizeof(cases[0])));
}
