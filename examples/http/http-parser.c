/* http-parser.c - see http-parser.h.
 *
 * Strict on purpose: anything the grammar of RFC 9110/9112 does not allow
 * is a 400, because a lenient parser in front of other software is where
 * request smuggling starts (bare LF, obs-fold, "Content-Length: 1, 2"). */
#include "http-parser.h"

#include <string.h>
#include <strings.h>

/* Per-head bookkeeping that the result does not need. */
typedef struct head_state {
  int hosts;
  bool have_length, conn_close, conn_keep_alive;
} head_state;

static bool is_tchar(unsigned char c)
{
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return true;
  return c && strchr("!#$%&'*+-.^_`|~", c);
}

static size_t token_len(const char *p, size_t n)
{
  size_t i = 0;

  while (i < n && is_tchar((unsigned char)p[i]))
    i++;
  return i;
}

static bool eq_nocase(const char *p, size_t n, const char *lit)
{
  return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Length of the line at p without its CRLF; -1 while no LF has arrived,
 * -2 for a line with a bare LF or a stray CR. */
static ptrdiff_t line_len(const char *p, const char *end)
{
  const char *lf = memchr(p, '\n', (size_t)(end - p));

  if (!lf)
    return -1;
  if (lf == p || lf[-1] != '\r' || memchr(p, '\r', (size_t)(lf - 1 - p)))
    return -2;
  return lf - 1 - p;
}

/* method SP request-target SP HTTP/DIGIT.DIGIT; returns 0 or a status. */
static int parse_request_line(const char *p, size_t n, http_request *r)
{
  size_t i = token_len(p, n), t;
  const char *v, *q;

  if (i == 0 || i >= n || p[i] != ' ')
    return 400;
  r->method = p;
  r->method_len = i;
  t = ++i;
  while (i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] < 0x7f)
    i++;
  if (i == t || i >= n || p[i] != ' ')
    return 400;
  r->path = p + t;
  q = memchr(r->path, '?', i - t);
  r->path_len = q ? (size_t)(q - r->path) : i - t;
  v = p + i + 1;
  if (n - i - 1 != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' ||
      v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
    return 400;
  if (v[5] != '1')
    return 505;
  r->minor = v[7] - '0';
  return 0;
}

/* Content-Length: 1*DIGIT, at most 18 digits so it cannot overflow. */
static int parse_length(const char *v, size_t n, http_request *r,
                        head_state *hs)
{
  uint64_t len = 0;

  if (n == 0 || n > 18)
    return 400;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return 400;
    len = len * 10 + (uint64_t)(v[i] - '0');
  }
  if (hs->have_length && len != r->content_length)
    return 400; /* conflicting lengths: which body would we skip? */
  hs->have_length = true;
  r->content_length = len;
  return 0;
}

/* Connection: a comma-separated list of options. */
static void parse_connection(const char *v, size_t n, head_state *hs)
{
  size_t i = 0;

  while (i < n) {
    size_t a, b;

    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    a = i;
    while (i < n && v[i] != ',')
      i++;
    b = i;
    while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
      b--;
    if (eq_nocase(v + a, b - a, "close"))
      hs->conn_close = true;
    else if (eq_nocase(v + a, b - a, "keep-alive"))
      hs->conn_keep_alive = true;
  }
}

/* field-name ":" OWS field-value OWS; returns 0 or a status. */
static int parse_header(const char *p, size_t n, http_request *r,
                        head_state *hs)
{
  size_t i = token_len(p, n), name_len = i, end = n;

  /* A line starting with whitespace (obs-fold) has no name: 400. */
  if (i == 0 || i >= n || p[i] != ':')
    return 400;
  i++;
  while (i < n && (p[i] == ' ' || p[i] == '\t'))
    i++;
  while (end > i && (p[end - 1] == ' ' || p[end - 1] == '\t'))
    end--;
  for (size_t k = i; k < end; k++) {
    unsigned char ch = (unsigned char)p[k];
    if ((ch < ' ' && ch != '\t') || ch == 0x7f)
      return 400;
  }
  if (eq_nocase(p, name_len, "content-length"))
    return parse_length(p + i, end - i, r, hs);
  if (eq_nocase(p, name_len, "transfer-encoding"))
    r->transfer_encoding = true;
  else if (eq_nocase(p, name_len, "connection"))
    parse_connection(p + i, end - i, hs);
  else if (eq_nocase(p, name_len, "host"))
    hs->hosts++;
  return 0;
}

static http_status fail(http_request *r, int status)
{
  r->error = status;
  return HTTP_ERROR;
}

http_status http_parse(const char *buf, size_t n, http_request *r)
{
  const char *p = buf, *end = buf + (n < HTTP_MAX_HEAD ? n : HTTP_MAX_HEAD);
  head_state hs = {0};
  bool first = true;

  memset(r, 0, sizeof(*r));
  while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
    p += 2;
  for (;;) {
    ptrdiff_t len = line_len(p, end);
    int err;

    if (len == -1)
      return n >= HTTP_MAX_HEAD ? fail(r, 431) : HTTP_INCOMPLETE;
    if (len == -2)
      return fail(r, 400);
    if (first)
      err = parse_request_line(p, (size_t)len, r);
    else if (len == 0)
      break;
    else
      err = parse_header(p, (size_t)len, r, &hs);
    if (err)
      return fail(r, err);
    first = false;
    p += len + 2;
  }
  if (r->minor >= 1 && hs.hosts != 1)
    return fail(r, 400); /* RFC 9112, 3.2 */
  r->head_len = (size_t)(p + 2 - buf);
  r->keep_alive = !hs.conn_close && (r->minor >= 1 || hs.conn_keep_alive);
  return HTTP_OK;
}
