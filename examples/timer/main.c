/* timer - periodic jobs and per-connection timers.
 *
 * - A server-wide heartbeat (gev_server_run_every, on the acceptor loop)
 *   prints "heartbeat N: K clients" every -b/--heartbeat ms.
 * - Every client gets "ping N\n" every -i/--interval ms from a periodic
 *   timer on its connection's own loop (gev_loop_run_every on
 *   gev_conn_loop), so the callback runs in the thread that owns the
 *   connection and may use it directly.
 * - A client that sends nothing for -k/--idle ms gets "goodbye: idle\n"
 *   and is closed. Whatever it sends counts as activity and is echoed,
 *   line by line (<gev/frame.h>'s delimiter framer).
 *
 * Both timer ids live in the connection's context and on_close cancels
 * them: a timer that fired after on_close would touch a freed connection.
 * Cancelling in the owning loop's thread is final (a cancelled timer never
 * runs), which is what makes this safe. */
#include "../common/example.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct client {
  gev_conn *c;
  gev_timer_id ping, kick;
  unsigned long pings;
  uint64_t last_input; /* ms, monotonic */
  gev_frame line;      /* the framer's place in a partial line */
} client;

/* Lines of input, echoed whole; at most 4 KiB with the newline. */
static const gev_frame_delim line_spec = {"\n", 1, 4096};

static uint64_t ping_ms = 1000, idle_ms = 10000;
static unsigned long heartbeats;

/* The loop's cached time (one clock read per pass, not per call): all
 * of this runs in the connection's loop. */
static uint64_t now_ms(const client *cl)
{
  return gev_loop_now_ms(gev_conn_loop(cl->c));
}

static void ping(void *arg)
{
  client *cl = arg;
  char line[32];
  int n = snprintf(line, sizeof(line), "ping %lu\n", ++cl->pings);

  gev_conn_send(cl->c, line, (size_t)n); /* a slow reader may refuse */
}

/* Input does not re-arm the kick timer (a cancel and an insert into the
 * timer heap per message); it only stamps last_input. When the timer fires
 * early because input came meanwhile, it re-arms itself for the rest. */
static void kick(void *arg)
{
  client *cl = arg;
  uint64_t idle = now_ms(cl) - cl->last_input;
  static const char bye[] = "goodbye: idle\n";

  cl->kick = 0;
  if (idle < idle_ms) {
    cl->kick =
        gev_loop_run_after(gev_conn_loop(cl->c), idle_ms - idle, kick, cl);
    if (cl->kick)
      return;
  }
  gev_loop_cancel(gev_conn_loop(cl->c), cl->ping);
  cl->ping = 0;
  gev_conn_send(cl->c, bye, sizeof(bye) - 1);
  gev_conn_close(cl->c); /* after the goodbye is flushed */
}

static void on_connect(gev_conn *c)
{
  gev_loop *l = gev_conn_loop(c);
  client *cl = calloc(1, sizeof(*cl));

  if (!cl) {
    gev_conn_close(c);
    return;
  }
  cl->c = c;
  cl->last_input = now_ms(cl);
  gev_conn_set_context(c, cl);
  cl->ping = gev_loop_run_every(l, ping_ms, ping, cl);
  cl->kick = gev_loop_run_after(l, idle_ms, kick, cl);
  if (!cl->ping || !cl->kick)
    gev_conn_close(c); /* on_close cancels whichever was created */
}

/* Input is echoed a whole line at a time (the library's delimiter framer;
 * the client's gev_frame remembers how far a partial line was searched).
 * A line longer than the framer's maximum ends the connection. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  static const char too_long[] = "goodbye: line too long\n";
  client *cl = gev_conn_context(c);
  gev_frame *f;
  int st;

  if (!cl) {
    ringbuffer_retrieve_all(in);
    return;
  }
  f = &cl->line;
  cl->last_input = now_ms(cl);
  while ((st = gev_frame_delim_next(in, &line_spec, f)) == 1) {
    const char *p = gev_frame_linearize(in, f);
    if (gev_frame_delim_put(out, &line_spec, p, f->payload) < 0)
      return; /* full: the rest waits in `in` */
    gev_frame_consume(in, f);
  }
  if (st == -EMSGSIZE) {
    ringbuffer_retrieve_all(in);
    ringbuffer_write(out, too_long, sizeof(too_long) - 1);
    gev_conn_close(c);
  }
}

static void on_close(gev_conn *c)
{
  client *cl = gev_conn_context(c);
  gev_loop *l = gev_conn_loop(c);

  if (!cl)
    return;
  if (cl->ping)
    gev_loop_cancel(l, cl->ping);
  if (cl->kick)
    gev_loop_cancel(l, cl->kick);
  free(cl);
}

static void heartbeat(void *arg)
{
  gev_server *s = arg;

  printf("heartbeat %lu: %d clients\n", ++heartbeats, gev_server_conn_count(s));
  fflush(stdout);
}

static int heartbeat_ms = 1000;

static void ready(gev_server *s)
{
  gev_server_run_every(s, (uint64_t)heartbeat_ms, heartbeat, s);
}

int main(int argc, char **argv)
{
  gev_handler h = {on_connect, on_message, on_close};
  gev_options opt = {0};
  const char *interval = "1000", *idle = "10000", *beat = "1000";
  ex_opt extra[] = {
      {"interval", 'i', "ms between pings to each client (1000)", &interval},
      {"idle", 'k', "ms without input before a client is closed (10000)",
       &idle},
      {"heartbeat", 'b', "ms between heartbeat lines (1000)", &beat},
  };
  ex_args a;

  ex_parse(argc, argv, &a, extra, 3);
  ping_ms = (uint64_t)ex_int("--interval", interval);
  idle_ms = (uint64_t)ex_int("--idle", idle);
  heartbeat_ms = ex_int("--heartbeat", beat);
  if (ping_ms == 0 || idle_ms == 0 || heartbeat_ms == 0) {
    fprintf(stderr, "intervals must be at least 1 ms\n");
    return 2;
  }
  return ex_run(&h, &opt, &a, ready);
}
