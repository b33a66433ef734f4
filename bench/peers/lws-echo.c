/* lws-echo - the WebSocket echo server on libwebsockets (Debian
 * libwebsockets-dev), the bench peer of bench/run-ws, written the way the
 * library's own minimal echo example teaches: each received message is
 * copied (with LWS_PRE headroom) into a per-connection lws_ring, a
 * writable callback is asked for, and each writable callback sends one
 * message with lws_write. A message that arrives in pieces is gathered
 * first. When the ring is full, reading that connection pauses
 * (lws_rx_flow_control) until it drains: the same backpressure gev has.
 *
 *   lws-echo [-p PORT]     prints "listening on 127.0.0.1:PORT" */
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING 64 /* messages queued per connection */

typedef struct msg {
  unsigned char *buf; /* LWS_PRE bytes, then the payload */
  size_t len;
  int binary;
} msg;

typedef struct pss {
  struct lws_ring *ring;
  uint32_t tail;
  unsigned char *part; /* a message still arriving */
  size_t part_len, part_cap;
  int paused;
} pss;

static void destroy_msg(void *m)
{
  free(((msg *)m)->buf);
}

static int gather(pss *p, const void *in, size_t len)
{
  if (p->part_len + len + LWS_PRE > p->part_cap) {
    size_t cap = p->part_cap ? p->part_cap : 4096;
    while (cap < p->part_len + len + LWS_PRE)
      cap *= 2;
    unsigned char *n = realloc(p->part, cap);
    if (!n)
      return -1;
    p->part = n;
    p->part_cap = cap;
  }
  if (!p->part_len)
    p->part_len = LWS_PRE;
  memcpy(p->part + p->part_len, in, len);
  p->part_len += len;
  return 0;
}

static int on_receive(struct lws *wsi, pss *p, void *in, size_t len)
{
  msg m;

  if (gather(p, in, len) < 0)
    return -1;
  if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
    return 0;
  m.buf = p->part;
  m.len = p->part_len - LWS_PRE;
  m.binary = lws_frame_is_binary(wsi);
  p->part = NULL;
  p->part_len = p->part_cap = 0;
  if (!lws_ring_insert(p->ring, &m, 1)) {
    destroy_msg(&m);
    return -1; /* cannot happen: we pause before the ring is full */
  }
  if (lws_ring_get_count_free_elements(p->ring) < 2 && !p->paused) {
    lws_rx_flow_control(wsi, 0);
    p->paused = 1;
  }
  lws_callback_on_writable(wsi);
  return 0;
}

static int on_writable(struct lws *wsi, pss *p)
{
  const msg *m = lws_ring_get_element(p->ring, &p->tail);

  if (!m)
    return 0;
  if (lws_write(wsi, m->buf + LWS_PRE, m->len,
                m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)m->len)
    return -1;
  lws_ring_consume_single_tail(p->ring, &p->tail, 1);
  if (lws_ring_get_element(p->ring, &p->tail))
    lws_callback_on_writable(wsi);
  if (p->paused && lws_ring_get_count_free_elements(p->ring) > RING / 2) {
    lws_rx_flow_control(wsi, 1);
    p->paused = 0;
  }
  return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
  pss *p = user;

  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    memset(p, 0, sizeof(*p));
    p->ring = lws_ring_create(sizeof(msg), RING, destroy_msg);
    return p->ring ? 0 : -1;
  case LWS_CALLBACK_CLOSED:
    lws_ring_destroy(p->ring);
    free(p->part);
    return 0;
  case LWS_CALLBACK_RECEIVE: return on_receive(wsi, p, in, len);
  case LWS_CALLBACK_SERVER_WRITEABLE: return on_writable(wsi, p);
  default: return 0;
  }
}

static const struct lws_protocols protocols[] = {
    {"echo", callback, sizeof(pss), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv)
{
  struct lws_context_creation_info info;
  struct lws_context *ctx = NULL;
  int port = 0, ch;

  while ((ch = getopt(argc, argv, "p:")) != -1)
    if (ch == 'p')
      port = atoi(optarg);
  lws_set_log_level(LLL_ERR, NULL);
  memset(&info, 0, sizeof(info));
  info.port = port ? port : 0;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.gid = (gid_t)-1;
  info.uid = (uid_t)-1;
  /* lws has no "port 0, tell me which": without -p, try ports from one
   * derived from the pid until one binds. */
  for (int i = 0; i < 50; i++) {
    if (!port)
      info.port = 20000 + (int)((getpid() + i * 7919) % 40000);
    if ((ctx = lws_create_context(&info)) || port)
      break;
  }
  if (!ctx)
    return 1;
  printf("listening on 127.0.0.1:%d\n", info.port);
  fflush(stdout);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  while (!stop && lws_service(ctx, 0) >= 0)
    ;
  lws_context_destroy(ctx);
  return 0;
}
