/* push - server-initiated messages: every interval the server sends a line
 * to every connected client.
 *
 * The connections live in a list under a mutex. The periodic job runs on
 * the acceptor loop (gev_server_run_every), a different thread from the
 * worker loops that own the connections, so it uses gev_conn_send, which is
 * safe from any thread. Holding the mutex while sending is what keeps each
 * gev_conn valid: on_close has to take the same mutex to unlink it. */
#include "../common/example.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct client {
  gev_conn *c;
  struct client *prev, *next;
} client;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static client *clients;
static unsigned long ticks;

static void on_connect(gev_conn *c)
{
  client *cl = calloc(1, sizeof(*cl));

  if (!cl) {
    gev_conn_close(c);
    return;
  }
  cl->c = c;
  gev_conn_set_context(c, cl);
  pthread_mutex_lock(&mu);
  cl->next = clients;
  if (clients)
    clients->prev = cl;
  clients = cl;
  pthread_mutex_unlock(&mu);
}

static void on_close(gev_conn *c)
{
  client *cl = gev_conn_context(c);

  if (!cl)
    return;
  pthread_mutex_lock(&mu);
  if (cl->prev)
    cl->prev->next = cl->next;
  else
    clients = cl->next;
  if (cl->next)
    cl->next->prev = cl->prev;
  pthread_mutex_unlock(&mu);
  free(cl);
}

/* Clients only listen; what they send is dropped. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  ringbuffer_retrieve_all(in);
}

static void push_all(void *arg)
{
  char line[64];
  int n = snprintf(line, sizeof(line), "tick %lu\n", ++ticks);

  (void)arg;
  pthread_mutex_lock(&mu);
  for (client *cl = clients; cl; cl = cl->next)
    gev_conn_send(cl->c, line, (size_t)n); /* a slow client may refuse */
  pthread_mutex_unlock(&mu);
}

static int interval_ms = 1000;

static void ready(gev_server *s)
{
  gev_server_run_every(s, (uint64_t)interval_ms, push_all, NULL);
}

int main(int argc, char **argv)
{
  gev_handler h = {on_connect, on_message, on_close};
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
