/* redis - an in-memory key-value server speaking RESP2, enough for
 * redis-cli and redis-benchmark: PING ECHO SET GET DEL EXISTS INCR DECR
 * INCRBY DECRBY EXPIRE PEXPIRE TTL PTTL KEYS DBSIZE FLUSHALL FLUSHDB QUIT,
 * COMMAND (an empty array) and CONFIG GET.
 *
 * on_message runs every complete request in `in` (pipelining) and leaves a
 * partial one; resp.c parses and encodes, db.c stores (sharded: db.h says
 * why). Replies go straight into `out`; a request whose reply does not fit
 * waits in `in` until output drains. A protocol error is answered, then
 * the connection is closed. */
#include "../common/example.h"
#include "db.h"
#include "resp.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Room kept for any reply that is not a bulk value or a key list. */
#define SMALL_REPLY 1024
#define DEFER 1

typedef struct cmd {
  const char *p; /* the request's bytes; argv holds offsets into them */
  const resp_arg *argv;
  long argc;
  const char *name; /* the command's name as listed in commands[] */
  resp_out o;
  bool quit;
} cmd;

#define A(i) (x->p + x->argv[i].off)
#define L(i) (x->argv[i].len)

static bool is(cmd *x, long i, const char *lit)
{
  return strlen(lit) == L(i) && strncasecmp(A(i), lit, L(i)) == 0;
}

/* Reply helpers for `return X(x, ...);` in the commands below. */
#define STR(x, s) (resp_raw(&(x)->o, s, strlen(s)), 0)
#define INT(x, v) (resp_int(&(x)->o, v), 0)
#define ERR(x, ...) (resp_error(&(x)->o, __VA_ARGS__), 0)
#define NOT_INT(x) ERR(x, "ERR value is not an integer or out of range")

/* Whether a reply of @p need bytes can go out now: 0 yes, DEFER when it
 * has to wait for output to drain, -1 never (an error was replied).
 * Waiting is safe only when `out` is at least half full when on_message
 * returns: gev then pauses the connection and shows `in` again once
 * output drains. A reply of at most a quarter of the cap that does not fit
 * guarantees that; max_buffer is set so that every value qualifies. */
static int fits(cmd *x, size_t need)
{
  size_t lim = ringbuffer_limit(x->o.rb), len = ringbuffer_len(x->o.rb);

  if (!lim || need <= lim - len)
    return 0;
  if (need > lim / 4) {
    resp_error(&x->o, "ERR reply of %zu bytes is too large", need);
    return -1;
  }
  return DEFER;
}

static int bulk(cmd *x, const char *s, size_t n)
{
  int st = fits(x, n + 32);

  if (st == 0)
    resp_bulk(&x->o, s, n);
  return st == DEFER ? DEFER : 0;
}

/* PING [message] and ECHO message. */
static int c_ping(cmd *x)
{
  return x->argc == 1 ? STR(x, "+PONG\r\n") : bulk(x, A(1), L(1));
}

static int c_get(cmd *x)
{
  uint64_t h;
  db_shard *s = db_lock(A(1), L(1), &h);
  db_entry *e = db_find(s, h, A(1), L(1), db_now());
  /* Copied while locked: another loop may replace the value after. */
  int r = e ? bulk(x, e->val, e->vlen) : STR(x, "$-1\r\n");

  db_unlock(s);
  return r;
}

static int c_set(cmd *x)
{
  bool nx = false, xx = false, keep = false, ok;
  long long ttl = 0, unit = 0;
  int64_t now = db_now(), expire = 0;
  db_entry *e;
  db_shard *s;
  uint64_t h;

  for (long i = 3; i < x->argc; i++) {
    if (is(x, i, "nx") || is(x, i, "xx") || is(x, i, "keepttl")) {
      *(is(x, i, "nx") ? &nx : is(x, i, "xx") ? &xx : &keep) = true;
    } else if ((is(x, i, "ex") || is(x, i, "px")) && !unit && i + 1 < x->argc) {
      unit = is(x, i, "ex") ? 1000 : 1;
      if (!resp_to_ll(A(i + 1), L(i + 1), &ttl))
        return NOT_INT(x);
      i++;
    } else {
      return ERR(x, "ERR syntax error");
    }
  }
  if ((nx && xx) || (keep && unit))
    return ERR(x, "ERR syntax error");
  if (unit && (ttl <= 0 || ttl > (INT64_MAX - now) / unit))
    return ERR(x, "ERR invalid expire time in 'set' command");
  if (unit)
    expire = now + ttl * unit;
  s = db_lock(A(1), L(1), &h);
  e = db_find(s, h, A(1), L(1), now);
  if ((nx && e) || (xx && !e)) {
    db_unlock(s);
    return STR(x, "$-1\r\n");
  }
  ok = db_set(s, h, A(1), L(1), A(2), L(2), keep && e ? e->expire : expire);
  db_unlock(s);
  return STR(x, ok ? "+OK\r\n" : "-ERR out of memory\r\n");
}

/* DEL and EXISTS: one shard locked at a time, no lock order to respect. */
static int c_count(cmd *x)
{
  int64_t now = db_now();
  long long n = 0;

  for (long i = 1; i < x->argc; i++) {
    uint64_t h;
    db_shard *s = db_lock(A(i), L(i), &h);
    n += x->name[0] == 'd' ? db_del(s, h, A(i), L(i), now)
                           : db_find(s, h, A(i), L(i), now) != NULL;
    db_unlock(s);
  }
  return INT(x, n);
}

/* INCR, DECR, INCRBY, DECRBY. */
static int c_incr(cmd *x)
{
  bool down = x->name[0] == 'd';
  long long by = down ? -1 : 1, v = 0;
  db_entry *e;
  db_shard *s;
  uint64_t h;
  char b[24];
  bool ok;

  if (x->argc == 3 && !resp_to_ll(A(2), L(2), &by))
    return NOT_INT(x);
  if (x->argc == 3 && down) {
    if (by == LLONG_MIN)
      return ERR(x, "ERR decrement would overflow");
    by = -by;
  }
  s = db_lock(A(1), L(1), &h);
  e = db_find(s, h, A(1), L(1), db_now());
  if (e && !resp_to_ll(e->val, e->vlen, &v)) {
    db_unlock(s);
    return NOT_INT(x);
  }
  if ((by > 0 && v > LLONG_MAX - by) || (by < 0 && v < LLONG_MIN - by)) {
    db_unlock(s);
    return ERR(x, "ERR increment or decrement would overflow");
  }
  v += by; /* the TTL stays, as in Redis */
  ok = db_set(s, h, A(1), L(1), b, (size_t)snprintf(b, sizeof(b), "%lld", v),
              e ? e->expire : 0);
  db_unlock(s);
  return ok ? INT(x, v) : ERR(x, "ERR out of memory");
}

/* EXPIRE and PEXPIRE. */
static int c_expire(cmd *x)
{
  long long t, unit = x->name[0] == 'p' ? 1 : 1000;
  int64_t now = db_now();
  db_entry *e;
  db_shard *s;
  uint64_t h;

  if (!resp_to_ll(A(2), L(2), &t))
    return NOT_INT(x);
  if (t > (INT64_MAX - now) / unit || t < INT64_MIN / unit)
    return ERR(x, "ERR invalid expire time in '%s' command", x->name);
  s = db_lock(A(1), L(1), &h);
  if ((e = db_find(s, h, A(1), L(1), now)) && t <= 0)
    db_del(s, h, A(1), L(1), now); /* a deadline in the past */
  else if (e)
    e->expire = now + t * unit;
  db_unlock(s);
  return INT(x, e != NULL);
}

/* TTL and PTTL: -2 no such key, -1 no expiry. */
static int c_ttl(cmd *x)
{
  int64_t now = db_now();
  long long r = -2;
  uint64_t h;
  db_shard *s = db_lock(A(1), L(1), &h);
  db_entry *e = db_find(s, h, A(1), L(1), now);

  if (e && !e->expire)
    r = -1;
  else if (e)
    r = x->name[0] == 'p' ? e->expire - now : (e->expire - now + 500) / 1000;
  db_unlock(s);
  return INT(x, r);
}

static int c_keys(cmd *x)
{
  char *buf;
  size_t len;
  long n = db_keys(A(1), L(1), db_now(), &buf, &len);
  int st;

  if (n < 0)
    return ERR(x, "ERR out of memory");
  if ((st = fits(x, len + 32)) == 0) {
    resp_array(&x->o, n);
    resp_raw(&x->o, buf, len);
  }
  free(buf);
  return st == DEFER ? DEFER : 0;
}

static int c_misc(cmd *x)
{
  switch (x->name[0]) {
  case 'd': return INT(x, (long long)db_size());
  case 'f': db_flush(); return STR(x, "+OK\r\n");
  case 'q': x->quit = true; return STR(x, "+OK\r\n");
  default: return STR(x, "*0\r\n"); /* COMMAND: enough for redis-cli */
  }
}

/* CONFIG GET name: the two settings redis-benchmark asks for, so that it
 * finds them; any other name gets an empty list. */
static int c_config(cmd *x)
{
  static const char *const conf[][2] = {{"save", ""}, {"appendonly", "no"}};

  if (!is(x, 1, "get") || x->argc != 3)
    return ERR(x, "ERR only CONFIG GET parameter is supported");
  for (int i = 0; i < 2; i++) {
    if (is(x, 2, conf[i][0])) {
      resp_array(&x->o, 2);
      resp_bulk(&x->o, conf[i][0], strlen(conf[i][0]));
      resp_bulk(&x->o, conf[i][1], strlen(conf[i][1]));
      return 0;
    }
  }
  return STR(x, "*0\r\n");
}

static const struct command {
  const char *name;
  long min, max; /* argument counts including the name; max -1: any */
  int (*fn)(cmd *x);
} commands[] = {
    {"get", 2, 2, c_get},        {"set", 3, -1, c_set},
    {"ping", 1, 2, c_ping},      {"echo", 2, 2, c_ping},
    {"del", 2, -1, c_count},     {"exists", 2, -1, c_count},
    {"incr", 2, 2, c_incr},      {"decr", 2, 2, c_incr},
    {"incrby", 3, 3, c_incr},    {"decrby", 3, 3, c_incr},
    {"expire", 3, 3, c_expire},  {"pexpire", 3, 3, c_expire},
    {"ttl", 2, 2, c_ttl},        {"pttl", 2, 2, c_ttl},
    {"keys", 2, 2, c_keys},      {"dbsize", 1, 1, c_misc},
    {"flushall", 1, 2, c_misc},  {"flushdb", 1, 2, c_misc},
    {"quit", 1, -1, c_misc},     {"command", 1, -1, c_misc},
    {"config", 2, -1, c_config},
};

static int execute(cmd *x)
{
  char args[160] = "";
  int used = 0;

  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
    const struct command *c = &commands[i];
    if (!is(x, 0, c->name))
      continue;
    x->name = c->name;
    if (x->argc < c->min || (c->max >= 0 && x->argc > c->max))
      return ERR(x, "ERR wrong number of arguments for '%s' command", c->name);
    return c->fn(x);
  }
  /* As Redis words it: the first arguments, 128 characters at most. */
  for (long i = 1; i < x->argc && used < 128; i++) {
    size_t room = (size_t)(128 - used);
    used += snprintf(args + used, sizeof(args) - (size_t)used, "'%.*s' ",
                     (int)(L(i) < room ? L(i) : room), A(i));
  }
  return ERR(x, "ERR unknown command '%.*s', with args beginning with: %s",
             (int)(L(0) < 128 ? L(0) : 128), A(0), args);
}

/* A connection's parser, and the delimiter framer's place in an inline
 * command's line (so a long line arriving in pieces is searched once). */
typedef struct conn_state {
  resp_parser ps;
  gev_frame line;
} conn_state;

static const gev_frame_delim inline_spec = {"\n", 1, RESP_MAX_INLINE};

static void on_connect(gev_conn *c)
{
  conn_state *cs = calloc(1, sizeof(*cs));

  if (!cs) {
    gev_conn_close(c);
    return;
  }
  resp_init(&cs->ps);
  gev_conn_set_context(c, cs);
}

/* An inline command: its line, framed by the library. */
static resp_status parse_line(conn_state *cs, ringbuffer *in, cmd *x)
{
  int st = gev_frame_delim_next(in, &inline_spec, &cs->line);

  if (st == 0)
    return RESP_INCOMPLETE;
  if (st < 0) {
    snprintf(cs->ps.error, sizeof(cs->ps.error),
             "Protocol error: too big inline request");
    return RESP_ERROR;
  }
  x->p = gev_frame_linearize(in, &cs->line);
  return resp_parse_line(&cs->ps, x->p, cs->line.payload, cs->line.size);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  conn_state *cs = gev_conn_context(c);
  resp_parser *ps = cs ? &cs->ps : NULL;
  bool done = !ps;

  while (!done && !ringbuffer_empty(in)) {
    size_t n = ringbuffer_len(in), lim = ringbuffer_limit(out);
    cmd x = {.o = {out, 0}};
    struct iovec seg[2];
    resp_status st;

    ringbuffer_peek(in, n, seg);
    x.p = seg[1].iov_len ? ringbuffer_linearize(in, n) : seg[0].iov_base;
    if ((st = resp_parse(ps, x.p, n)) == RESP_INLINE)
      st = parse_line(cs, in, &x);
    if (st == RESP_INCOMPLETE)
      return;
    if (lim && lim - ringbuffer_len(out) < SMALL_REPLY)
      return; /* `out` is full: gev shows us `in` again once it drains */
    if (st == RESP_ERROR) {
      resp_error(&x.o, "ERR %s", ps->error);
      done = true;
      break;
    }
    x.argv = ps->argv;
    x.argc = ps->nargs;
    if (x.argc > 0 && execute(&x) == DEFER)
      return;
    ringbuffer_retrieve(in, ps->len);
    resp_next(ps);
    done = x.o.err || x.quit; /* QUIT, or a reply cut short (ENOMEM) */
  }
  if (done) {
    /* After what is in `out`, and lingering: the client may still be
     * sending (pipelined commands after the bad one), and a plain close
     * would answer those bytes with RST, which can cost it the error
     * reply. */
    ringbuffer_retrieve_all(in);
    gev_conn_close_lingering(c, 2000);
  }
}

static void on_close(gev_conn *c)
{
  conn_state *cs = gev_conn_context(c);

  if (cs) {
    resp_free(&cs->ps);
    free(cs);
  }
}

static void ready(gev_server *s)
{
  gev_server_run_every(s, 100, db_sweep, NULL);
}

int main(int argc, char **argv)
{
  gev_handler h = {on_connect, on_message, on_close};
  gev_options opt = {0};
  ex_args a;
  int st;

  ex_parse(argc, argv, &a, NULL, 0);
  /* Room for a request with a 512 MiB argument in `in`, and for a reply
   * that large in `out` while within a quarter of the cap (see fits()).
   * Buffers only grow that far for such requests. */
  opt.max_buffer = 4 * ((size_t)RESP_MAX_BULK + 4096);
  db_init();
  st = ex_run(&h, &opt, &a, ready);
  db_destroy();
  return st;
}
