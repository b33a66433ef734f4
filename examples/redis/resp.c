/* resp.c - see resp.h. The error texts are Redis's own, so clients and
 * people see what they would see from a real server. */
#include "resp.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void resp_init(resp_parser *ps)
{
  *ps = (resp_parser){.argc = -1};
}

void resp_next(resp_parser *ps)
{
  ps->len = 0;
  ps->argc = -1;
  ps->nargs = 0;
}

void resp_free(resp_parser *ps)
{
  free(ps->argv);
  resp_init(ps);
}

static resp_status fail(resp_parser *ps, const char *msg)
{
  snprintf(ps->error, sizeof(ps->error), "%s", msg);
  return RESP_ERROR;
}

static int push(resp_parser *ps, size_t off, size_t len)
{
  if (ps->nargs == ps->cap) {
    long ncap = ps->cap ? ps->cap * 2 : 16;
    resp_arg *v = realloc(ps->argv, (size_t)ncap * sizeof(*v));
    if (!v)
      return -1;
    ps->argv = v;
    ps->cap = ncap;
  }
  ps->argv[ps->nargs++] = (resp_arg){off, len};
  return 0;
}

/* A line "<type>[-]DIGITS\r\n" at p[0..n): 1 with *v and *used (the line's
 * length), 0 when incomplete, -1 when malformed. More than 18 digits is
 * malformed: that is far past every limit and cannot overflow. */
static int number_line(const char *p, size_t n, long long *v, size_t *used)
{
  size_t i = 1, d0;
  long long x = 0;
  int neg = i < n && p[i] == '-';

  d0 = i += (size_t)neg;
  for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
    if (i - d0 >= 18)
      return -1;
    x = x * 10 + (p[i] - '0');
  }
  if (i == n)
    return 0;
  if (i == d0 || p[i] != '\r')
    return -1;
  if (i + 1 == n)
    return 0;
  if (p[i + 1] != '\n')
    return -1;
  *v = neg ? -x : x;
  *used = i + 2;
  return 1;
}

/* "GET key": words separated by spaces or tabs (no quoting). */
resp_status resp_parse_line(resp_parser *ps, const char *p, size_t n,
                            size_t frame_len)
{
  size_t end = n, i = 0;

  if (end && p[end - 1] == '\r')
    end--;
  ps->nargs = 0;
  while (i < end) {
    size_t a;
    while (i < end && (p[i] == ' ' || p[i] == '\t'))
      i++;
    for (a = i; i < end && p[i] != ' ' && p[i] != '\t'; i++)
      ;
    if (i > a && push(ps, a, i - a) < 0)
      return fail(ps, "out of memory");
  }
  ps->len = frame_len;
  ps->argc = ps->nargs;
  return RESP_COMMAND;
}

resp_status resp_parse(resp_parser *ps, const char *p, size_t n)
{
  long long v;
  size_t used;
  int r;

  if (ps->argc < 0) {
    if (n == 0)
      return RESP_INCOMPLETE;
    if (p[0] != '*')
      return RESP_INLINE; /* a line: the caller frames it */
    if ((r = number_line(p, n, &v, &used)) == 0)
      return RESP_INCOMPLETE;
    if (r < 0 || v > RESP_MAX_ARGS)
      return fail(ps, "Protocol error: invalid multibulk length");
    ps->len = used;
    ps->argc = v > 0 ? (long)v : 0; /* "*0" and "*-1" are no-ops */
  }
  while (ps->nargs < ps->argc) {
    const char *q = p + ps->len;
    size_t rem = n - ps->len;

    if (rem == 0)
      return RESP_INCOMPLETE;
    if (q[0] != '$') {
      unsigned char ch = (unsigned char)q[0];
      snprintf(ps->error, sizeof(ps->error),
               "Protocol error: expected '$', got '%c'",
               ch >= ' ' && ch < 0x7f ? ch : '?');
      return RESP_ERROR;
    }
    if ((r = number_line(q, rem, &v, &used)) == 0)
      return RESP_INCOMPLETE;
    if (r < 0 || v < 0 || v > RESP_MAX_BULK)
      return fail(ps, "Protocol error: invalid bulk length");
    if (rem - used < (size_t)v + 2)
      return RESP_INCOMPLETE; /* the header is re-read next time: cheap */
    if (q[used + (size_t)v] != '\r' || q[used + (size_t)v + 1] != '\n')
      return fail(ps, "Protocol error: bulk string without CRLF");
    if (push(ps, ps->len + used, (size_t)v) < 0)
      return fail(ps, "out of memory");
    ps->len += used + (size_t)v + 2;
  }
  return RESP_COMMAND;
}

bool resp_to_ll(const char *s, size_t n, long long *v)
{
  unsigned long long x = 0, lim = (unsigned long long)LLONG_MAX;
  bool neg = n > 0 && s[0] == '-';
  size_t i = neg;

  if (n == 0 || n > 20 || i == n || (s[i] == '0' && n > 1))
    return false;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9' || x > (ULLONG_MAX - 9) / 10)
      return false;
    x = x * 10 + (unsigned long long)(s[i] - '0');
  }
  if (x > lim + neg)
    return false;
  *v = neg ? (x == lim + 1 ? LLONG_MIN : -(long long)x) : (long long)x;
  return true;
}

void resp_raw(resp_out *o, const void *p, size_t n)
{
  if (!o->err)
    o->err = ringbuffer_write(o->rb, p, n);
}

static void prefixed(resp_out *o, char type, long long v)
{
  char b[32];
  int n = snprintf(b, sizeof(b), "%c%lld\r\n", type, v);

  resp_raw(o, b, (size_t)n);
}

void resp_int(resp_out *o, long long v)
{
  prefixed(o, ':', v);
}

void resp_array(resp_out *o, long n)
{
  prefixed(o, '*', n);
}

void resp_bulk(resp_out *o, const char *p, size_t n)
{
  prefixed(o, '$', (long long)n);
  resp_raw(o, p, n);
  resp_raw(o, "\r\n", 2);
}

void resp_nil(resp_out *o)
{
  resp_raw(o, "$-1\r\n", 5);
}

void resp_error(resp_out *o, const char *fmt, ...)
{
  char b[512];
  va_list ap;
  int n;

  b[0] = '-';
  va_start(ap, fmt);
  n = vsnprintf(b + 1, sizeof(b) - 3, fmt, ap);
  va_end(ap);
  n = n < 0 ? 0 : n > (int)sizeof(b) - 4 ? (int)sizeof(b) - 4 : n;
  for (int i = 1; i <= n; i++)
    if ((unsigned char)b[i] < ' ' || b[i] == 0x7f)
      b[i] = ' ';
  memcpy(b + 1 + n, "\r\n", 2);
  resp_raw(o, b, (size_t)n + 3);
}
