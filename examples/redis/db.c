/* db.c - see db.h. */
#include "db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSHARDS 64
#define MIN_BUCKETS 16
#define SWEEP_BUCKETS 64 /* per shard per sweep: bounds the time locked */

struct db_shard {
  pthread_mutex_t mu;
  db_entry **b;
  size_t nb, n, cursor; /* nb is 0 or a power of two */
};

static db_shard shards[NSHARDS];

int64_t db_now(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* FNV-1a with a final mix, so the top bits (the shard) and the low bits
 * (the bucket) are both well spread. Not keyed: fine for an example, but
 * a server facing hostile clients wants SipHash with a random key. */
static uint64_t hash(const char *k, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;

  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)k[i]) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

static bool expired(const db_entry *e, int64_t now)
{
  return e->expire && e->expire <= now;
}

void db_init(void)
{
  for (int i = 0; i < NSHARDS; i++)
    pthread_mutex_init(&shards[i].mu, NULL);
}

static void clear(db_shard *s)
{
  for (size_t i = 0; i < s->nb; i++) {
    for (db_entry *e = s->b[i], *next; e; e = next) {
      next = e->next;
      free(e);
    }
  }
  free(s->b);
  s->b = NULL;
  s->nb = s->n = s->cursor = 0;
}

void db_destroy(void)
{
  for (int i = 0; i < NSHARDS; i++) {
    clear(&shards[i]);
    pthread_mutex_destroy(&shards[i].mu);
  }
}

db_shard *db_lock(const char *k, size_t klen, uint64_t *h)
{
  db_shard *s = &shards[(*h = hash(k, klen)) >> 58];

  pthread_mutex_lock(&s->mu);
  return s;
}

void db_unlock(db_shard *s)
{
  pthread_mutex_unlock(&s->mu);
}

/* The link that points at the key's entry, or the NULL link at the end of
 * its chain. Expired entries are found too. */
static db_entry **slot(db_shard *s, uint64_t h, const char *k, size_t klen)
{
  db_entry **l;

  if (!s->nb)
    return NULL;
  for (l = &s->b[h & (s->nb - 1)]; *l; l = &(*l)->next) {
    db_entry *e = *l;
    if (e->hash == h && e->klen == klen && !memcmp(e->key, k, klen))
      return l;
  }
  return l;
}

static void unlink_free(db_shard *s, db_entry **l)
{
  db_entry *e = *l;

  *l = e->next;
  free(e);
  s->n--;
}

db_entry *db_find(db_shard *s, uint64_t h, const char *k, size_t klen,
                  int64_t now)
{
  db_entry **l = slot(s, h, k, klen);

  if (!l || !*l)
    return NULL;
  if (expired(*l, now)) {
    unlink_free(s, l);
    return NULL;
  }
  return *l;
}

/* Doubles the bucket array; on ENOMEM the chains just get longer. */
static void grow(db_shard *s)
{
  size_t nb = s->nb ? s->nb * 2 : MIN_BUCKETS;
  db_entry **b = calloc(nb, sizeof(*b));

  if (!b)
    return;
  for (size_t i = 0; i < s->nb; i++) {
    for (db_entry *e = s->b[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  free(s->b);
  s->b = b;
  s->nb = nb;
  s->cursor = 0;
}

bool db_set(db_shard *s, uint64_t h, const char *k, size_t klen, const char *v,
            size_t vlen, int64_t expire)
{
  db_entry *e = malloc(sizeof(*e) + klen + vlen), **l;

  if (!e)
    return false;
  *e = (db_entry){.hash = h, .expire = expire, .klen = klen, .vlen = vlen};
  e->val = e->key + klen;
  memcpy(e->key, k, klen);
  memcpy(e->val, v, vlen);
  if (s->n >= s->nb)
    grow(s);
  if (!s->nb) {
    free(e);
    return false;
  }
  l = slot(s, h, k, klen);
  if (*l) {
    e->next = (*l)->next;
    free(*l);
    *l = e;
  } else {
    e->next = s->b[h & (s->nb - 1)];
    s->b[h & (s->nb - 1)] = e;
    s->n++;
  }
  return true;
}

bool db_del(db_shard *s, uint64_t h, const char *k, size_t klen, int64_t now)
{
  db_entry **l = slot(s, h, k, klen);
  bool live;

  if (!l || !*l)
    return false;
  live = !expired(*l, now);
  unlink_free(s, l);
  return live;
}

size_t db_size(void)
{
  size_t n = 0;

  for (int i = 0; i < NSHARDS; i++) {
    pthread_mutex_lock(&shards[i].mu);
    n += shards[i].n;
    pthread_mutex_unlock(&shards[i].mu);
  }
  return n;
}

void db_flush(void)
{
  for (int i = 0; i < NSHARDS; i++) {
    pthread_mutex_lock(&shards[i].mu);
    clear(&shards[i]);
    pthread_mutex_unlock(&shards[i].mu);
  }
}

/* Removes the expired entries of one chain; with match, also encodes the
 * live keys that match into *out. -1 on ENOMEM. */
static long scan_chain(db_shard *s, db_entry **l, int64_t now, const char *pat,
                       size_t plen, char **out, size_t *len, size_t *cap)
{
  long n = 0;

  while (*l) {
    db_entry *e = *l;
    if (expired(e, now)) {
      unlink_free(s, l);
      continue;
    }
    l = &e->next;
    if (!pat || !db_glob(pat, plen, e->key, e->klen))
      continue;
    if (*cap - *len < e->klen + 32) {
      size_t ncap = (*cap + e->klen + 32) * 2;
      char *nb = realloc(*out, ncap);
      if (!nb)
        return -1;
      *out = nb;
      *cap = ncap;
    }
    *len += (size_t)sprintf(*out + *len, "$%zu\r\n", e->klen);
    memcpy(*out + *len, e->key, e->klen);
    memcpy(*out + *len + e->klen, "\r\n", 2);
    *len += e->klen + 2;
    n++;
  }
  return n;
}

void db_sweep(void *arg)
{
  int64_t now = db_now();

  (void)arg;
  for (int i = 0; i < NSHARDS; i++) {
    db_shard *s = &shards[i];
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < SWEEP_BUCKETS && s->nb; k++) {
      scan_chain(s, &s->b[s->cursor], now, NULL, 0, NULL, NULL, NULL);
      s->cursor = (s->cursor + 1) & (s->nb - 1);
    }
    pthread_mutex_unlock(&s->mu);
  }
}

long db_keys(const char *pat, size_t plen, int64_t now, char **buf, size_t *len)
{
  size_t cap = 0;
  long n = 0, k = 0;

  *buf = NULL;
  *len = 0;
  for (int i = 0; i < NSHARDS && k >= 0; i++) {
    db_shard *s = &shards[i];
    pthread_mutex_lock(&s->mu);
    for (size_t j = 0; j < s->nb && k >= 0; j++)
      if ((k = scan_chain(s, &s->b[j], now, pat, plen, buf, len, &cap)) > 0)
        n += k;
    pthread_mutex_unlock(&s->mu);
  }
  if (k < 0) {
    free(*buf);
    *buf = NULL;
    return -1;
  }
  return n;
}

/* One pattern element (not '*') against c; *adv gets its length. */
static bool glob_one(const char *p, size_t n, unsigned char c, size_t *adv)
{
  size_t i = 1;
  bool neg, hit = false;

  *adv = 1;
  if (p[0] == '?')
    return true;
  if (p[0] == '\\' && n > 1) {
    *adv = 2;
    return (unsigned char)p[1] == c;
  }
  if (p[0] != '[')
    return (unsigned char)p[0] == c;
  if ((neg = i < n && p[i] == '^'))
    i++;
  while (i < n && p[i] != ']') {
    unsigned char lo = (unsigned char)p[i], hi = lo;
    if (p[i] == '\\' && i + 1 < n) {
      lo = hi = (unsigned char)p[++i];
    } else if (i + 2 < n && p[i + 1] == '-' && p[i + 2] != ']') {
      hi = (unsigned char)p[i + 2];
      i += 2;
    }
    if (lo > hi) {
      unsigned char t = lo;
      lo = hi;
      hi = t;
    }
    hit |= c >= lo && c <= hi;
    i++;
  }
  if (i == n)
    return c == '['; /* no closing ']': a literal '[' */
  *adv = i + 1;
  return hit != neg;
}

bool db_glob(const char *p, size_t pn, const char *s, size_t sn)
{
  size_t pi = 0, si = 0, star = SIZE_MAX, mark = 0, adv;

  /* Greedy with one backtrack point, the last '*': linear in practice. */
  while (si < sn) {
    if (pi < pn && p[pi] == '*') {
      star = ++pi;
      mark = si;
      continue;
    }
    if (pi < pn && glob_one(p + pi, pn - pi, (unsigned char)s[si], &adv)) {
      pi += adv;
      si++;
      continue;
    }
    if (star == SIZE_MAX)
      return false;
    pi = star;
    si = ++mark;
  }
  while (pi < pn && p[pi] == '*')
    pi++;
  return pi == pn;
}
