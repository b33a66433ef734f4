/* maxconn - an echo server that serves at most N clients at a time.
 *
 * gev_options.max_connections does the work: a client past the limit is
 * accepted and closed at once (it sees EOF), never reaching on_connect, and
 * its slot frees when a served client's on_close has run. Served clients
 * get a greeting, then their bytes echoed. */
#include "../common/example.h"

#include <stdio.h>
#include <sys/uio.h>

static int limit = 3;

static void on_connect(gev_conn *c)
{
  char hello[96];
  int n = snprintf(hello, sizeof(hello), "welcome: %d of at most %d\n",
                   gev_server_conn_count(gev_conn_server(c)), limit);

  gev_conn_send(c, hello, (size_t)n);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  struct iovec seg[2];

  (void)c;
  ringbuffer_peek(in, ringbuffer_len(in), seg);
  for (int i = 0; i < 2 && seg[i].iov_len; i++) {
    if (ringbuffer_write(out, seg[i].iov_base, seg[i].iov_len) < 0)
      return; /* output full: the rest waits for the next call */
    ringbuffer_retrieve(in, seg[i].iov_len);
  }
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_connect = on_connect, .on_message = on_message};
  gev_options opt = {0};
  const char *max = "3";
  ex_opt extra[] = {{"max", 'm', "most clients served at once", &max}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 1);
  limit = ex_int("--max", max);
  opt.max_connections = limit;
  return ex_run(&h, &opt, &a, NULL);
}
