/* websocket - a WebSocket server: GET / serves a chat page, /echo echoes
 * every message with its opcode, /chat broadcasts each text message to
 * every /chat client and a server timer pushes "* N online" to them every
 * -i ms.
 *
 * The HTTP side is examples/http's parser: on_message parses the request
 * head, answers the page itself, and hands /echo and /chat to the library
 * with gev_ws_upgrade, which validates the handshake, answers it and
 * switches the connection's handler (bytes that came after the request
 * are the WebSocket's first frames). On SIGTERM or SIGINT the graceful
 * shutdown sends every client Close 1001 (the library's default
 * on_shutdown) and waits for the answers, bounded by --drain-ms.
 *
 * The chat clients live in a list under a mutex, as in examples/push:
 * the timer runs on the acceptor loop and a message arrives on any worker
 * loop, and gev_ws_send works from any thread; holding the mutex while
 * sending keeps each gev_ws valid, since on_close takes it to unlink. */
#include "../common/example.h"
#include "../http/http-parser.h"
#include "page.h"

#include <gev/ws.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct member {
  gev_ws *ws;
  struct member *prev, *next;
} member;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static member *members;
static int online;

static gev_ws_options ws_opt;

static void broadcast(const void *p, size_t n)
{
  pthread_mutex_lock(&mu);
  for (member *m = members; m; m = m->next)
    gev_ws_send(m->ws, GEV_WS_TEXT, p, n); /* a slow client may refuse */
  pthread_mutex_unlock(&mu);
}

static void chat_open(gev_ws *ws)
{
  member *m = calloc(1, sizeof(*m));

  if (!m) {
    gev_ws_close(ws, GEV_WS_CLOSE_INTERNAL, NULL);
    return;
  }
  m->ws = ws;
  gev_ws_set_context(ws, m);
  pthread_mutex_lock(&mu);
  m->next = members;
  if (members)
    members->prev = m;
  members = m;
  online++;
  pthread_mutex_unlock(&mu);
}

static void chat_message(gev_ws *ws, int op, const void *p, size_t n)
{
  (void)ws;
  if (op == GEV_WS_TEXT)
    broadcast(p, n);
}

static void chat_close(gev_ws *ws, int code, const char *reason)
{
  member *m = gev_ws_context(ws);

  (void)code;
  (void)reason;
  if (!m)
    return;
  pthread_mutex_lock(&mu);
  if (m->prev)
    m->prev->next = m->next;
  else
    members = m->next;
  if (m->next)
    m->next->prev = m->prev;
  online--;
  pthread_mutex_unlock(&mu);
  free(m);
}

static void echo_message(gev_ws *ws, int op, const void *p, size_t n)
{
  gev_ws_send(ws, op, p, n);
}

static const gev_ws_handler chat = {
    .on_open = chat_open, .on_message = chat_message, .on_close = chat_close};
static const gev_ws_handler echo = {.on_message = echo_message};

static void push_online(void *arg)
{
  char line[64];
  int n;

  (void)arg;
  pthread_mutex_lock(&mu);
  n = snprintf(line, sizeof(line), "* %d online", online);
  pthread_mutex_unlock(&mu);
  broadcast(line, (size_t)n);
}

static bool is(const char *p, size_t n, const char *lit)
{
  return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static void respond(gev_conn *c, ringbuffer *out, int status, const char *type,
                    const char *body, size_t len)
{
  char head[256];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   status, status == 200 ? "OK" : "Not Found", type, len);

  if (ringbuffer_write(out, head, (size_t)n) < 0 ||
      ringbuffer_write(out, body, len) < 0)
    gev_conn_close(c);
}

/* Requests until an upgrade; a bad one closes the connection. */
static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  while (!ringbuffer_empty(in)) {
    size_t n =
        ringbuffer_len(in) < HTTP_MAX_HEAD ? ringbuffer_len(in) : HTTP_MAX_HEAD;
    const char *p = ringbuffer_linearize(in, n);
    http_request r;
    http_status st = http_parse(p, n, &r);

    if (st == HTTP_INCOMPLETE)
      return;
    if (st == HTTP_ERROR) {
      ringbuffer_retrieve_all(in);
      respond(c, out, 404, "text/plain", "bad request\n", 12);
      gev_conn_close(c);
      return;
    }
    if (is(r.path, r.path_len, "/chat") || is(r.path, r.path_len, "/echo")) {
      /* The head is still in `in`: the library reads it again. */
      gev_ws_upgrade(c, in, out, r.path[1] == 'c' ? &chat : &echo, &ws_opt,
                     NULL);
      return;
    }
    ringbuffer_retrieve(in, r.head_len);
    if (is(r.path, r.path_len, "/"))
      respond(c, out, 200, "text/html; charset=utf-8", chat_page,
              sizeof(chat_page) - 1);
    else
      respond(c, out, 404, "text/plain", "not found\n", 10);
    if (!r.keep_alive) {
      ringbuffer_retrieve_all(in);
      gev_conn_close_lingering(c, 2000);
      return;
    }
  }
}

static int interval_ms;

static void ready(gev_server *s)
{
  gev_server_run_every(s, (uint64_t)interval_ms, push_online, NULL);
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *max_message = "16777216", *interval = "1000";
  ex_opt extra[] = {{"max-message", 'm',
                     "largest message in bytes (default 16 MiB)", &max_message},
                    {"interval", 'i',
                     "ms between '* N online' pushes (default 1000)",
                     &interval}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 2);
  ws_opt.max_message = (size_t)ex_int("--max-message", max_message);
  if (ws_opt.max_message == 0)
    ws_opt.max_message = 16u << 20;
  interval_ms = ex_int("--interval", interval);
  if (interval_ms == 0)
    interval_ms = 1;
  opt.max_buffer = ws_opt.max_message + (1u << 20); /* a message fits */
  return ex_run(&h, &opt, &a, ready);
}
