/* fuzz-http.c - libFuzzer target for the HTTP example's request parser.
 * Checks, besides crashes: fields point into the input, and feeding the
 * bytes in pieces never gives a different verdict than all at once. */
#include "http/http-parser.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_fields(const char *p, size_t n, const http_request *r)
{
  if (r->head_len > n || r->head_len > HTTP_MAX_HEAD)
    abort();
  if (r->method < p || r->method + r->method_len > p + r->head_len ||
      r->path < p || r->path + r->path_len > p + r->head_len)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *p = (const char *)data;
  http_request all, part;
  http_status st = http_parse(p, size, &all);

  if (st == HTTP_OK)
    check_fields(p, size, &all);
  if (st == HTTP_ERROR && all.error != 400 && all.error != 431 &&
      all.error != 505 && all.error != 501)
    abort();
  /* Prefixes: undecided, or the same verdict as the whole input. */
  for (size_t k = 0; k < size; k += 1 + k / 4) {
    http_status s = http_parse(p, k, &part);
    if (s == HTTP_INCOMPLETE)
      continue;
    if (s != st)
      abort();
    if (s == HTTP_OK && part.head_len != all.head_len)
      abort();
  }
  return 0;
}
