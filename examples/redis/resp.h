/* resp.h - RESP2: an incremental request parser over a byte span, and
 * reply encoders that append to a ring buffer.
 *
 * Requests are arrays of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
 * or inline commands ("GET k\r\n", as typed into telnet), whose line the
 * caller frames. The parser keeps
 * its place between calls, so bytes are looked at once even when a large
 * request arrives in many pieces: call resp_parse again with the same bytes
 * (moved or not) plus whatever arrived since. Arguments are offsets into
 * those bytes, so they survive the buffer being linearized in between.
 *
 * No I/O and no global state; the only allocation is the argument array,
 * which grows with the arguments actually received (not with the announced
 * count) and is kept for the next request. */
#ifndef GEV_EX_RESP_H
#define GEV_EX_RESP_H

#include <gev/ringbuffer.h>

#include <stdbool.h>
#include <stddef.h>

#define RESP_MAX_BULK (512L * 1024 * 1024) /* bytes in one argument */
#define RESP_MAX_ARGS (1024L * 1024)       /* arguments in one request */
#define RESP_MAX_INLINE (64L * 1024)       /* bytes in an inline request */

typedef enum {
  RESP_INCOMPLETE = 0, /* wait for more bytes */
  RESP_COMMAND = 1,    /* a whole request of `len` bytes (nargs may be 0) */
  RESP_ERROR = -1,     /* `error` says why; reply it and close */
  RESP_INLINE = 2      /* an inline command: frame its line, resp_parse_line */
} resp_status;

typedef struct resp_arg {
  size_t off, len;
} resp_arg;

typedef struct resp_parser {
  size_t len;     /* bytes of the current request parsed so far */
  long argc;      /* announced arguments; -1 before the header */
  long nargs;     /* arguments parsed */
  resp_arg *argv; /* nargs entries */
  long cap;       /* entries allocated */
  char error[64]; /* with RESP_ERROR */
} resp_parser;

/* An empty parser. */
void resp_init(resp_parser *ps);

/* Parses the request at the start of p[0..n). An inline command (one
 * that does not start with '*') is a line ending in "\n", at most
 * RESP_MAX_INLINE bytes with it: the caller finds it (the server with
 * gev's delimiter framer) and hands it to resp_parse_line. */
resp_status resp_parse(resp_parser *ps, const char *p, size_t n);

/* Splits the inline command p[0..n) (without its "\n"; a "\r" before it
 * is dropped) into arguments; frame_len is the line's length with its
 * "\n", which becomes the request's len. RESP_COMMAND or RESP_ERROR. */
resp_status resp_parse_line(resp_parser *ps, const char *p, size_t n,
                            size_t frame_len);

/* Forgets the request just returned (consume its len bytes first). */
void resp_next(resp_parser *ps);

/* Frees the argument array. */
void resp_free(resp_parser *ps);

/* Redis's integer syntax: [-]DIGITS, no '+', spaces or leading zeros,
 * within long long. */
bool resp_to_ll(const char *s, size_t n, long long *v);

/* Reply encoders. Each appends one whole value to rb. The first failed
 * write (rb's limit, ENOMEM) is kept in err and turns later calls into
 * no-ops, so a caller checks once, after the whole reply. */
typedef struct resp_out {
  ringbuffer *rb;
  int err;
} resp_out;

void resp_raw(resp_out *o, const void *p, size_t n);
void resp_int(resp_out *o, long long v);              /* :v */
void resp_array(resp_out *o, long n);                 /* *n, then n values */
void resp_bulk(resp_out *o, const char *p, size_t n); /* $n, the bytes */
void resp_nil(resp_out *o);                           /* $-1 */
/* -message; control characters (CR, LF) become spaces so the message
 * stays one line, whatever the arguments printed into it hold. */
__attribute__((format(printf, 2, 3))) void resp_error(resp_out *o,
                                                      const char *fmt, ...);

#endif
