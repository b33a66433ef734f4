/* echo - the RFC 862 echo service: every byte received is sent back.
 *
 * The handler moves the input to the output with ringbuffer_move: when the
 * output is empty (the usual case) the two buffers just exchange their
 * storage, so the bytes are never copied between reading and sending. If
 * `out` is at max_buffer, what does not fit stays in `in` and gev calls
 * on_message again once the peer has read some (backpressure). */
#include "../common/example.h"

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);

  (void)c;
  ringbuffer_move(out, in, lim > used ? lim - used : 0); /* what fits */
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
