/* http-parser.h - an HTTP/1.x request-head parser over a byte span.
 *
 * Pure: no I/O, no allocation, no global state, so a fuzzer can call
 * http_parse on arbitrary bytes. It is incremental in the simple sense: call
 * it again with the same bytes plus whatever arrived since; a head is never
 * longer than HTTP_MAX_HEAD, so re-scanning costs at most that much. */
#ifndef GEV_EX_HTTP_PARSER_H
#define GEV_EX_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request line plus headers plus the blank line, at most. */
#define HTTP_MAX_HEAD 8192

typedef enum {
  HTTP_INCOMPLETE = 0, /* no verdict yet: wait for more bytes */
  HTTP_OK = 1,         /* a whole, valid head of head_len bytes */
  HTTP_ERROR = -1      /* answer `error` and close */
} http_status;

typedef struct http_request {
  const char *method; /* points into the parsed bytes */
  size_t method_len;
  const char *path; /* the request target without its query */
  size_t path_len;
  int minor;               /* HTTP/1.minor */
  size_t head_len;         /* bytes through the blank line */
  uint64_t content_length; /* 0 when absent */
  bool keep_alive;         /* after the version and Connection rules */
  bool transfer_encoding;  /* any Transfer-Encoding (we do not decode it) */
  int error;               /* with HTTP_ERROR: 400, 431 or 505 */
} http_request;

/* Parses the request head at the start of p[0..n). Bytes past
 * HTTP_MAX_HEAD are never looked at. Lines must end in CRLF; empty lines
 * before the request line are skipped (RFC 9112, 2.2). HTTP/1.1 requests
 * need exactly one Host header. */
http_status http_parse(const char *p, size_t n, http_request *r);

#endif
