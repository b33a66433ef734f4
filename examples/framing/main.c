/* framing - a length-prefixed protocol: each frame is a 4-byte big-endian
 * payload length followed by the payload; each reply is a frame with the
 * same length and the payload reversed.
 *
 * TCP is a byte stream, so a frame may arrive in many pieces and many
 * frames in one piece. on_message takes only whole frames out of `in`
 * with the library's length framer (<gev/frame.h>: the header may straddle
 * the ring buffer's wrap) and leaves a partial one where it is. A header
 * announcing more than -m/--max-frame bytes closes that connection and no
 * other. */
#include "../common/example.h"
#include "frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static gev_frame_length spec = {.size = FRAME_HEADER};

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  gev_frame f;
  int st;

  while ((st = gev_frame_length_next(in, &spec, &f)) == 1) {
    size_t lim = ringbuffer_limit(out);
    uint8_t *p;

    if (lim && ringbuffer_len(out) + f.size > lim)
      return; /* no room: gev shows us `in` again once `out` drains */
    /* The payload is consumed right after, so reversing it in place in
     * `in` costs no copy. */
    p = gev_frame_linearize(in, &f);
    frame_reverse(p, f.payload);
    if (gev_frame_length_put(out, &spec, NULL, p, f.payload) < 0) {
      gev_conn_close(c); /* out of memory: the stream cannot go on */
      return;
    }
    gev_frame_consume(in, &f);
  }
  if (st == -EMSGSIZE) {
    fprintf(stderr, "%s: frame over %zu bytes, closing\n",
            gev_conn_peer_addr(c), spec.max_frame - FRAME_HEADER);
    ringbuffer_retrieve_all(in);
    gev_conn_close(c);
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
  size_t max_frame = parse_size(max);

  spec.max_frame = FRAME_HEADER + max_frame;
  /* `in` must hold a whole frame. A reply that does not fit then means
   * `out` is over 3/4 full, well above the half at which gev stops reading
   * and later shows `in` again once output drains: the frame just waits. */
  opt.max_buffer = 4 * (max_frame + FRAME_HEADER);
  if (opt.max_buffer < ((size_t)64 << 20))
    opt.max_buffer = (size_t)64 << 20;
  return ex_run(&h, &opt, &a, NULL);
}
