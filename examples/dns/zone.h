/* zone.h - one DNS zone held in memory, and the answer to a query about
 * it (RFC 1034/1035). Pure functions over byte spans: no I/O, no
 * allocation after the zone is built, so the datagram handler calls
 * dns_answer straight from the loop's receive buffer into a stack buffer. */
#ifndef GEV_EXAMPLE_DNS_ZONE_H
#define GEV_EXAMPLE_DNS_ZONE_H

#include <stddef.h>
#include <stdint.h>

enum {
  DNS_A = 1,
  DNS_NS = 2,
  DNS_CNAME = 5,
  DNS_SOA = 6,
  DNS_MX = 15,
  DNS_TXT = 16,
  DNS_AAAA = 28,
  DNS_OPT = 41,
  DNS_ANY = 255
};

/* A record: the owner's name in wire form (lower case), its type, TTL and
 * rdata, all built once by zone_add. */
typedef struct dns_rr {
  uint8_t name[256];
  size_t name_len;
  uint16_t type;
  uint32_t ttl;
  uint8_t rdata[300];
  size_t rdata_len;
} dns_rr;

#define ZONE_MAX_RRS 64

typedef struct dns_zone {
  uint8_t origin[256]; /* wire form */
  size_t origin_len;
  dns_rr rr[ZONE_MAX_RRS];
  int n;
} dns_zone;

/* A zone for `origin` ("gev.test") with SOA and NS records; 0, or -1 for
 * a malformed name. */
int zone_init(dns_zone *z, const char *origin);

/* Adds "name type value" ("www A 192.0.2.1"; "@" is the origin, a name
 * without a final dot is relative to it; MX values are "10 mail", TXT a
 * string, SOA is made by zone_init). 0, or -1 for a malformed line. */
int zone_add(dns_zone *z, const char *name, const char *type, const char *value,
             uint32_t ttl);

/* The response to the query q[0..n) in out (at most cap bytes, at least
 * 512): its length, or 0 when nothing should be sent (a response, or not
 * even a header). `max_udp` is the payload size the transport allows (512,
 * or the client's EDNS size; 65535 over TCP): a longer answer is cut and
 * marked TC. Names outside the zone are REFUSED; unknown names in it get
 * NXDOMAIN with the SOA; malformed queries FORMERR; other opcodes NOTIMP. */
size_t dns_answer(const dns_zone *z, const uint8_t *q, size_t n, uint8_t *out,
                  size_t cap, int tcp);

#endif
