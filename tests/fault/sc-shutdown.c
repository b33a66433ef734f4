/* sc-shutdown.c - a graceful shutdown (gev_server_shutdown) while four
 * echo streams run: each is either served fully or closed (never
 * corrupted, never left open), the shutdown returns, and every on_close
 * runs once. Which streams finish before the shutdown closes them is the
 * scheduler's choice, so "served" is not counted here. */
#include "harness.h"

#include <string.h>
#include <time.h>

enum { CLIENTS = 4 };

static void on_connect(gev_conn *c)
{
  fr_track_connect(c);
}
static void on_close(gev_conn *c)
{
  fr_track_close(c);
}

int sc_shutdown(fault_run *r)
{
  gev_handler h = {.on_connect = on_connect,
                   .on_message = fr_echo_message,
                   .on_close = on_close};
  gev_options o = {.num_loops = 2};
  fr_client cl[CLIENTS];
  fr_server sv;
  int err;

  fr_logger_install();
  if ((err = fr_server_open(&sv, &h, &o)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, CLIENTS, true);
  }
  memset(cl, 0, sizeof(cl));
  for (int i = 0; i < CLIENTS; i++) {
    cl[i].port = gev_server_port(sv.s);
    cl[i].tag = 'S';
    cl[i].len = 256 * 1024;
    cl[i].seed = (uint32_t)(i + 21);
    fr_client_start(&cl[i]);
  }
  nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
  err = fr_server_close(&sv, 2000);
  for (int i = 0; i < CLIENTS; i++)
    fr_client_join(&cl[i]);
  r->gev_error = err;
  return fr_finish(r, CLIENTS, CLIENTS, err < 0);
}
