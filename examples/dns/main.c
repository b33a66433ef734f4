/* dns - a tiny authoritative DNS server for one zone, over UDP and TCP on
 * one port, for `dig @127.0.0.1 -p PORT www.gev.test`.
 *
 * The zone (-z/--zone, default gev.test) holds an SOA, an NS, A and AAAA
 * records for the origin and www, an MX, a TXT and a CNAME (alias -> www).
 * Queries are answered from the datagram handler straight out of the
 * loop's receive buffer, one reply per query through the batched send
 * path: no allocation per query. Names outside the zone are REFUSED (the
 * server does not recurse), unknown names get NXDOMAIN. Over TCP each
 * message carries a 2-byte length (RFC 1035 4.2.2); several may arrive in
 * one read and one may straddle reads. */
#include "../common/example.h"
#include "zone.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gev/udp.h>

static dns_zone zone;
static ex_args args;
static gev_udp_server *udp;

static void on_datagram(gev_udp *u, const gev_udp_datagram *d)
{
  uint8_t out[4096];
  size_t n;

  if (!d->peer_len || d->truncated)
    return;
  n = dns_answer(&zone, d->data, d->len, out, sizeof(out), 0);
  if (n)
    gev_udp_send_to(u, d->peer, d->peer_len, out, n);
}

/* Every whole length-prefixed message in `in`; a partial one waits. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  static _Thread_local uint8_t reply[2 + 65535];
  uint8_t hdr[2];

  while (ringbuffer_len(in) >= 2) {
    struct iovec seg[2];
    size_t len, n;
    ringbuffer_peek(in, 2, seg);
    memcpy(hdr, seg[0].iov_base, seg[0].iov_len);
    if (seg[0].iov_len < 2)
      memcpy(hdr + 1, seg[1].iov_base, 1);
    len = (size_t)hdr[0] << 8 | hdr[1];
    if (ringbuffer_len(in) < 2 + len)
      return;
    const uint8_t *q = (const uint8_t *)ringbuffer_linearize(in, 2 + len) + 2;
    n = dns_answer(&zone, q, len, reply + 2, sizeof(reply) - 2, 1);
    ringbuffer_retrieve(in, 2 + len);
    if (!n)
      continue;
    reply[0] = (uint8_t)(n >> 8);
    reply[1] = (uint8_t)n;
    if (ringbuffer_write(out, reply, 2 + n) < 0) { /* past max_buffer */
      gev_conn_close(c);
      return;
    }
  }
}

static void add_udp(gev_server *s)
{
  gev_udp_handler h = {.on_datagram = on_datagram};
  gev_udp_options o = {0};
  char addr[300];
  int err;

  if (args.unix_path)
    snprintf(addr, sizeof(addr), "unix:%s.dgram", args.unix_path);
  else if (strchr(args.host, ':'))
    snprintf(addr, sizeof(addr), "[%s]:%d", args.host, gev_server_port(s));
  else
    snprintf(addr, sizeof(addr), "%s:%d", args.host, gev_server_port(s));
  o.address = addr;
  if ((err = gev_udp_server_new(&udp, s, &h, &o)) < 0) {
    fprintf(stderr, "cannot serve UDP on %s: %s\n", addr, gev_strerror(err));
    exit(1);
  }
}

static void build_zone(const char *origin)
{
  static const char *const rrs[][3] = {
      {"@", "A", "192.0.2.1"},         {"@", "AAAA", "2001:db8::1"},
      {"ns1", "A", "192.0.2.53"},      {"www", "A", "192.0.2.80"},
      {"www", "AAAA", "2001:db8::80"}, {"alias", "CNAME", "www"},
      {"@", "MX", "10 mail"},          {"mail", "A", "192.0.2.25"},
      {"@", "TXT", "served by gev"},
  };

  if (zone_init(&zone, origin) < 0) {
    fprintf(stderr, "bad zone name: %s\n", origin);
    exit(2);
  }
  for (size_t i = 0; i < sizeof(rrs) / sizeof(rrs[0]); i++)
    if (zone_add(&zone, rrs[i][0], rrs[i][1], rrs[i][2], 300) < 0) {
      fprintf(stderr, "zone %s: cannot add %s %s\n", origin, rrs[i][0],
              rrs[i][1]);
      exit(2);
    }
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *origin = "gev.test";
  ex_opt extra[] = {
      {"zone", 'z', "the zone served (default gev.test)", &origin}};
  int st;

  ex_parse(argc, argv, &args, extra, 1);
  build_zone(origin);
  st = ex_run(&h, &opt, &args, add_udp);
  gev_udp_server_free(udp);
  return st;
}
