/* zone.c - see zone.h. */
#include "zone.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define HDR 12
#define RCODE_FORMERR 1
#define RCODE_NXDOMAIN 3
#define RCODE_NOTIMP 4
#define RCODE_REFUSED 5

/* "www.gev.test" -> 3www3gev4test0, lower case; -1 when malformed. */
static int to_wire(const char *s, uint8_t *out, size_t cap, size_t *len)
{
  size_t o = 0;

  while (*s && *s != '.') {
    const char *dot = strchr(s, '.');
    size_t l = dot ? (size_t)(dot - s) : strlen(s);
    if (l == 0 || l > 63 || o + 1 + l + 1 > cap || o + 1 + l > 254)
      return -1;
    out[o++] = (uint8_t)l;
    for (size_t i = 0; i < l; i++)
      out[o++] = (uint8_t)tolower((unsigned char)s[i]);
    s += l;
    if (*s == '.')
      s++;
  }
  out[o++] = 0;
  *len = o;
  return 0;
}

/* An owner or target name: "@", absolute ("x.y."), or relative. */
static int name_of(const dns_zone *z, const char *s, uint8_t *out, size_t *len)
{
  size_t l = strlen(s);

  if (strcmp(s, "@") == 0) {
    memcpy(out, z->origin, z->origin_len);
    *len = z->origin_len;
    return 0;
  }
  if (l && s[l - 1] == '.')
    return to_wire(s, out, 256, len);
  if (to_wire(s, out, 256, len) < 0 || *len - 1 + z->origin_len > 255)
    return -1;
  memcpy(out + *len - 1, z->origin, z->origin_len); /* over the root */
  *len += z->origin_len - 1;
  return 0;
}

static void put16(uint8_t *p, unsigned v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
  put16(p, v >> 16);
  put16(p + 2, v & 0xffff);
}

static int type_of(const char *t)
{
  static const struct {
    const char *n;
    int t;
  } m[] = {{"A", DNS_A},   {"NS", DNS_NS},   {"CNAME", DNS_CNAME},
           {"MX", DNS_MX}, {"TXT", DNS_TXT}, {"AAAA", DNS_AAAA}};

  for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
    if (strcmp(t, m[i].n) == 0)
      return m[i].t;
  return -1;
}

static int rdata_of(const dns_zone *z, dns_rr *r, const char *v)
{
  size_t l;

  switch (r->type) {
  case DNS_A:
    r->rdata_len = 4;
    return inet_pton(AF_INET, v, r->rdata) == 1 ? 0 : -1;
  case DNS_AAAA:
    r->rdata_len = 16;
    return inet_pton(AF_INET6, v, r->rdata) == 1 ? 0 : -1;
  case DNS_NS:
  case DNS_CNAME: return name_of(z, v, r->rdata, &r->rdata_len);
  case DNS_MX: {
    char *end;
    long pref = strtol(v, &end, 10);
    if (end == v || *end != ' ' || pref < 0 || pref > 65535 ||
        name_of(z, end + 1, r->rdata + 2, &l) < 0)
      return -1;
    put16(r->rdata, (unsigned)pref);
    r->rdata_len = l + 2;
    return 0;
  }
  case DNS_TXT:
    if ((l = strlen(v)) > 255)
      return -1;
    r->rdata[0] = (uint8_t)l;
    memcpy(r->rdata + 1, v, l);
    r->rdata_len = l + 1;
    return 0;
  }
  return -1;
}

int zone_add(dns_zone *z, const char *name, const char *type, const char *value,
             uint32_t ttl)
{
  dns_rr *r;
  int t = type_of(type);

  if (t < 0 || z->n == ZONE_MAX_RRS)
    return -1;
  r = &z->rr[z->n];
  r->type = (uint16_t)t;
  r->ttl = ttl;
  if (name_of(z, name, r->name, &r->name_len) < 0 || rdata_of(z, r, value) < 0)
    return -1;
  z->n++;
  return 0;
}

/* SOA: ns1.ORIGIN hostmaster.ORIGIN serial refresh retry expire minimum. */
static int add_soa(dns_zone *z)
{
  dns_rr *r = &z->rr[z->n];
  size_t a, b;

  r->type = DNS_SOA;
  r->ttl = 3600;
  memcpy(r->name, z->origin, z->origin_len);
  r->name_len = z->origin_len;
  if (name_of(z, "ns1", r->rdata, &a) < 0 ||
      name_of(z, "hostmaster", r->rdata + a, &b) < 0)
    return -1;
  put32(r->rdata + a + b, 2026120201u);
  put32(r->rdata + a + b + 4, 7200);
  put32(r->rdata + a + b + 8, 900);
  put32(r->rdata + a + b + 12, 1209600);
  put32(r->rdata + a + b + 16, 300); /* negative answers are cached 300 s */
  r->rdata_len = a + b + 20;
  z->n++;
  return 0;
}

int zone_init(dns_zone *z, const char *origin)
{
  memset(z, 0, sizeof(*z));
  if (to_wire(origin, z->origin, sizeof(z->origin), &z->origin_len) < 0 ||
      z->origin_len < 2)
    return -1;
  return add_soa(z) < 0 || zone_add(z, "@", "NS", "ns1", 3600) < 0 ? -1 : 0;
}

/* ---- answering --------------------------------------------------------- */

/* The question's name, lower-cased into name; its end offset, or 0 when
 * malformed (compression pointers are not expected in a question). */
static size_t read_qname(const uint8_t *q, size_t n, uint8_t *name, size_t *len)
{
  size_t o = HDR, w = 0;

  while (o < n && q[o] != 0) {
    size_t l = q[o];
    if (l > 63 || o + 1 + l >= n || w + 1 + l > 254)
      return 0;
    name[w++] = (uint8_t)l;
    for (size_t i = 0; i < l; i++)
      name[w++] = (uint8_t)tolower(q[o + 1 + i]);
    o += 1 + l;
  }
  if (o >= n)
    return 0;
  name[w++] = 0;
  *len = w;
  return o + 1;
}

static bool in_zone(const dns_zone *z, const uint8_t *name, size_t len)
{
  size_t o = 0;

  for (;;) {
    if (len - o == z->origin_len && memcmp(name + o, z->origin, len - o) == 0)
      return true;
    if (name[o] == 0)
      return false;
    o += 1 + name[o];
  }
}

typedef struct resp {
  uint8_t *p;
  size_t len, cap, limit;
  bool cut;
  unsigned count[3]; /* answer, authority, additional */
} resp;

/* One record into section sec; owner given as a pointer to the question's
 * name when it is that name, else written out. */
static void put_rr(resp *r, const dns_rr *rr, int sec, bool owner_is_q)
{
  size_t need = (owner_is_q ? 2 : rr->name_len) + 10 + rr->rdata_len;
  uint8_t *p;

  if (r->cut || r->len + need > r->limit) {
    r->cut = true;
    return;
  }
  p = r->p + r->len;
  if (owner_is_q) {
    put16(p, 0xc000 | HDR);
    p += 2;
  } else {
    memcpy(p, rr->name, rr->name_len);
    p += rr->name_len;
  }
  put16(p, rr->type);
  put16(p + 2, 1);
  put32(p + 4, rr->ttl);
  put16(p + 8, (unsigned)rr->rdata_len);
  memcpy(p + 10, rr->rdata, rr->rdata_len);
  r->len += need;
  r->count[sec]++;
}

static bool same(const dns_rr *rr, const uint8_t *name, size_t len)
{
  return rr->name_len == len && memcmp(rr->name, name, len) == 0;
}

/* The answers for name/type, following one CNAME inside the zone; the
 * rcode (0 or NXDOMAIN). */
static int lookup(const dns_zone *z, resp *r, const uint8_t *name, size_t len,
                  unsigned type)
{
  bool exists = false, answered = false;
  const dns_rr *cname = NULL;

  for (int i = 0; i < z->n; i++) {
    const dns_rr *rr = &z->rr[i];
    if (!same(rr, name, len))
      continue;
    exists = true;
    if (rr->type == type || type == DNS_ANY) {
      put_rr(r, rr, 0, true);
      answered = true;
    } else if (rr->type == DNS_CNAME) {
      cname = rr;
    }
  }
  if (!answered && cname) {
    put_rr(r, cname, 0, true);
    for (int i = 0; i < z->n; i++)
      if (same(&z->rr[i], cname->rdata, cname->rdata_len) &&
          z->rr[i].type == type)
        put_rr(r, &z->rr[i], 0, false);
    answered = true;
  }
  if (!answered)
    put_rr(r, &z->rr[0], 1, false); /* the SOA: how long to cache "no" */
  return exists ? 0 : RCODE_NXDOMAIN;
}

/* EDNS: the payload size the client announced in an OPT record right
 * after the question (where dig puts it), at least 512. */
static size_t edns_size(const uint8_t *q, size_t n, size_t qend)
{
  unsigned ar = (unsigned)q[10] << 8 | q[11];

  if (ar == 0 || qend + 11 > n || q[qend] != 0 ||
      ((unsigned)q[qend + 1] << 8 | q[qend + 2]) != DNS_OPT)
    return 0;
  size_t sz = (size_t)q[qend + 3] << 8 | q[qend + 4];
  return sz < 512 ? 512 : sz;
}

static size_t finish(resp *r, const uint8_t *q, int rcode, size_t edns)
{
  uint8_t *p = r->p;

  if (edns && !r->cut && r->len + 11 <= r->limit) { /* our OPT: 1232 */
    static const uint8_t opt[11] = {0, 0, DNS_OPT, 0x04, 0xd0, 0,
                                    0, 0, 0,       0,    0};
    memcpy(p + r->len, opt, sizeof(opt));
    r->len += sizeof(opt);
    r->count[2]++;
  }
  p[2] = (uint8_t)(0x80 | (q[2] & 0x79) | 0x04 | (r->cut ? 0x02 : 0));
  p[3] = (uint8_t)rcode; /* RA 0: authoritative only */
  put16(p + 6, r->count[0]);
  put16(p + 8, r->count[1]);
  put16(p + 10, r->count[2]);
  return r->len;
}

size_t dns_answer(const dns_zone *z, const uint8_t *q, size_t n, uint8_t *out,
                  size_t cap, int tcp)
{
  uint8_t name[256];
  size_t len = 0, qend, edns;
  resp r = {.p = out, .cap = cap};
  unsigned type;

  if (n < HDR || (q[2] & 0x80) || cap < 512)
    return 0; /* not a query: never answer a response */
  memset(out, 0, HDR);
  memcpy(out, q, 2); /* the id */
  r.len = HDR;
  r.limit = tcp ? cap : 512;
  if (((q[2] >> 3) & 0xf) != 0)
    return finish(&r, q, RCODE_NOTIMP, 0);
  if (q[4] != 0 || q[5] != 1 || !(qend = read_qname(q, n, name, &len)) ||
      qend + 4 > n)
    return finish(&r, q, RCODE_FORMERR, 0);
  type = (unsigned)q[qend] << 8 | q[qend + 1];
  edns = edns_size(q, n, qend + 4);
  if (!tcp && edns)
    r.limit = edns < cap ? edns : cap;
  memcpy(out + HDR, q + HDR, qend + 4 - HDR); /* the question */
  r.len = qend + 4;
  out[5] = 1;
  if (!in_zone(z, name, len))
    return finish(&r, q, RCODE_REFUSED, edns);
  return finish(&r, q, lookup(z, &r, name, len, type), edns);
}
