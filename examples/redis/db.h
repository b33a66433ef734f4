/* db.h - the key space shared by all worker loops.
 *
 * 64 shards, each a chained hash table under its own mutex. A key's hash
 * picks its shard, so loops contend only when they touch the same shard at
 * the same moment; one global lock would serialize every command of every
 * loop, and a read-write lock would not help because GET may write (it
 * removes an expired key). Commands lock one shard at a time, also the
 * multi-key ones (DEL, EXISTS) and the whole-space ones (KEYS, DBSIZE,
 * FLUSHALL), so there is no lock order to get wrong. Chaining, rather than
 * open addressing, makes deletion simple (no tombstones), and a table grows
 * one shard at a time, so a resize stalls only 1/64 of the keys.
 *
 * Expiry is lazy (db_find removes an expired key it meets) plus a periodic
 * sweep that visits a bounded number of buckets per shard per call. */
#ifndef GEV_EX_DB_H
#define GEV_EX_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db_entry {
  struct db_entry *next;
  uint64_t hash;
  int64_t expire; /* db_now() deadline in ms; 0 = never */
  size_t klen, vlen;
  char *val; /* right after the key, in the same allocation */
  char key[];
} db_entry;

typedef struct db_shard db_shard;

void db_init(void);
void db_destroy(void); /* frees every key; no other thread may use the db */
int64_t db_now(void);  /* ms on the monotonic clock */

/* Locks the shard that owns the key; *h receives the key's hash for the
 * calls below, which all need the shard locked. */
db_shard *db_lock(const char *k, size_t klen, uint64_t *h);
void db_unlock(db_shard *s);
/* The live entry, or NULL (an expired one is removed). Valid until unlock
 * or the next db_set/db_del on this shard. */
db_entry *db_find(db_shard *s, uint64_t h, const char *k, size_t klen,
                  int64_t now);
/* Sets the key, replacing any entry. false on ENOMEM (nothing changes). */
bool db_set(db_shard *s, uint64_t h, const char *k, size_t klen, const char *v,
            size_t vlen, int64_t expire);
/* Removes the key; true when a live key was removed. */
bool db_del(db_shard *s, uint64_t h, const char *k, size_t klen, int64_t now);

/* Whole key space, one shard locked at a time (so not a snapshot). */
size_t db_size(void); /* counts expired keys not yet swept, as Redis does */
void db_flush(void);
void db_sweep(void *arg); /* a timer callback: removes expired keys */
/* Encodes every live key matching the glob pattern as a RESP bulk string
 * into *buf (malloc'ed, the caller frees it). The key count, -1 on ENOMEM. */
long db_keys(const char *pat, size_t plen, int64_t now, char **buf,
             size_t *len);

/* Redis-style glob: * ? [abc] [^a-z] and \ escapes. */
bool db_glob(const char *p, size_t pn, const char *s, size_t sn);

#endif
