/* framing - a length-prefixed protocol: each frame is a 4-byte big-endian
 * payload length followed by the payload; each reply is a frame with the
 * same length and the payload reversed.
 *
 * TCP is a byte stream, so a frame may arrive in many pieces and many
 * frames in one piece. on_message takes only whole frames out of `in`
 * (frame_next peeks at the header, which may straddle the ring buffer's
 * wrap) and leaves a partial one where it is. A header announcing more
 * than -m/--max-frame bytes closes that connection and no other. */
#include "../common/example.h"
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>

static size_t max_frame = 1 << 20;

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  uint32_t len;

  for (;;) {
    size_t total, lim = ringbuffer_limit(out);
    uint8_t *p;

    switch (frame_next(in, max_frame, &len)) {
    case FRAME_INCOMPLETE: return;
    case FRAME_TOO_BIG:
      fprintf(stderr, "%s: frame of %lu bytes is over %zu, closing\n",
              gev_conn_peer_addr(c), (unsigned long)len, max_frame);
      ringbuffer_retrieve_all(in);
      gev_conn_close(c);
      return;
    case FRAME_READY: break;
    }
    total = FRAME_HEADER + (size_t)len;
    if (lim && ringbuffer_len(out) + total > lim)
      return; /* no room: gev shows us `in` again once `out` drains */
    /* The payload is consumed right after, so reversing it in place in
     * `in` costs no copy. */
    p = ringbuffer_linearize(in, total);
    frame_reverse(p + FRAME_HEADER, len);
    if (ringbuffer_write(out, p, total) < 0) {
      gev_conn_close(c); /* out of memory: the stream cannot go on */
      return;
    }
    ringbuffer_retrieve(in, total);
  }
}

/* Bytes, with an optional k or m suffix (KiB, MiB). */
static size_t parse_size(const char *v)
{
  char *end;
  unsigned long long n = strtoull(v, &end, 10);

  if (*end == 'k' || *end == 'K')
    n <<= 10, end++;
  else if (*end == 'm' || *end == 'M')
    n <<= 20, end++;
  if (end == v || *end || *v == '-' || n > (1u << 30)) {
    fprintf(stderr, "bad value for --max-frame: %s (at most 1G)\n", v);
    exit(2);
  }
  return (size_t)n;
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *max = "1M";
  ex_opt extra[] = {
      {"max-frame", 'm', "largest payload in bytes, k/M ok (1M)", &max}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 1);
  max_frame = parse_size(max);
  /* `in` must hold a whole frame. A reply that does not fit then means
   * `out` is over 3/4 full, well above the half at which gev stops reading
   * and later shows `in` again once output drains: the frame just waits. */
  opt.max_buffer = 4 * (max_frame + FRAME_HEADER);
  if (opt.max_buffer < ((size_t)64 << 20))
    opt.max_buffer = (size_t)64 << 20;
  return ex_run(&h, &opt, &a, NULL);
}
