/* push - server-initiated messages: every interval the server sends a line
 * to every connected client.
 *
 * The periodic job is a tick on the acceptor loop (gev_server_tick: its
 * callback returns the delay until its next run), a different thread from
 * the worker loops that own the connections. It hands the line to
 * gev_server_broadcast, which copies it once and posts it into every
 * worker loop, where each loop sends it to its own connections: the
 * application keeps no list of connections, no mutex and no references.
 * A client whose output is full (one that does not read) misses a tick
 * rather than holding the others up. */
#include "../common/example.h"

#include <stdio.h>

static unsigned long ticks;
static int interval_ms = 1000;

/* Clients only listen; what they send is dropped. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  ringbuffer_retrieve_all(in);
}

static uint64_t push_all(void *arg)
{
  gev_server *s = arg;
  char line[64];
  int n = snprintf(line, sizeof(line), "tick %lu\n", ++ticks);

  gev_server_broadcast(s, line, (size_t)n, NULL);
  return (uint64_t)interval_ms;
}

static void ready(gev_server *s)
{
  gev_server_tick(s, (uint64_t)interval_ms, push_all, s);
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *interval = "1000";
  ex_opt extra[] = {
      {"interval", 'i', "milliseconds between pushes", &interval}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 1);
  interval_ms = ex_int("--interval", interval);
  if (interval_ms == 0)
    interval_ms = 1;
  return ex_run(&h, &opt, &a, ready);
}
