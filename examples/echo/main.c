/* echo - the RFC 862 echo service: every byte received is sent back.
 *
 * The handler moves the whole input to the output: ringbuffer_peek gives at
 * most two segments, which are appended to `out` and consumed from `in`. If
 * `out` is at max_buffer, what does not fit stays in `in` and gev calls
 * on_message again once the peer has read some (backpressure). */
#include "../common/example.h"

#include <sys/uio.h>

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);
  size_t room = lim > used ? lim - used : 0;
  struct iovec seg[2];

  (void)c;
  ringbuffer_peek(in, room, seg); /* what fits; the rest waits in `in` */
  for (int i = 0; i < 2 && seg[i].iov_len; i++) {
    ringbuffer_write(out, seg[i].iov_base, seg[i].iov_len);
    ringbuffer_retrieve(in, seg[i].iov_len);
  }
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *max_buffer = "0";
  ex_opt extra[] = {{"max-buffer", 'b',
                     "per-connection buffer cap in bytes (0 = 64 MiB)",
                     &max_buffer}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 1);
  opt.max_buffer = (size_t)ex_int("--max-buffer", max_buffer);
  return ex_run(&h, &opt, &a, NULL);
}
