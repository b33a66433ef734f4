/* fuzz-resp.c - libFuzzer target for the Redis example's RESP parser, fed
 * the way the server feeds it: the bytes arrive in pieces, the parser keeps
 * its place, each whole request is consumed before the next. Checks that
 * arguments lie inside the request and requests inside the input. */
#include "redis/resp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  resp_parser ps;
  size_t start = 0, avail = 0, step;

  if (size < 1)
    return 0;
  step = data[0] % 16 + 1; /* how many bytes arrive at a time */
  data++;
  size--;
  resp_init(&ps);
  while (avail < size) {
    avail = avail + step < size ? avail + step : size;
    for (;;) {
      const char *p = (const char *)data + start;
      size_t n = avail - start;
      resp_status st = resp_parse(&ps, p, n);
      if (st == RESP_INLINE) {
        /* The server frames the line with gev's delimiter framer; its
         * contract, here on the flat bytes: a "\n" within the first
         * RESP_MAX_INLINE bytes, else too big once that many are in. */
        size_t lim = n < RESP_MAX_INLINE ? n : RESP_MAX_INLINE;
        const char *lf = memchr(p, '\n', lim);
        if (!lf && n >= RESP_MAX_INLINE)
          goto out;
        st =
            lf ? resp_parse_line(&ps, p, (size_t)(lf - p), (size_t)(lf - p) + 1)
               : RESP_INCOMPLETE;
      }
      if (st == RESP_INCOMPLETE)
        break;
      if (st == RESP_ERROR)
        goto out;
      if (ps.len == 0 || ps.len > n || ps.nargs < 0)
        abort();
      for (long i = 0; i < ps.nargs; i++)
        if (ps.argv[i].off > ps.len || ps.argv[i].len > ps.len - ps.argv[i].off)
          abort();
      start += ps.len;
      resp_next(&ps);
    }
  }
out:
  resp_free(&ps);
  return 0;
}
