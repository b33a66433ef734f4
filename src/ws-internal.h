/* ws-internal.h - internal: one WebSocket connection (struct gev_ws), shared
 * by ws.c (frames and the close handshake), ws-handshake.c (the opening
 * handshake), ws-server.c and ws-client.c. Not installed. */
#ifndef GEV_SRC_WS_INTERNAL_H
#define GEV_SRC_WS_INTERNAL_H

#include <pthread.h>

#include <gev/ws.h>

#include "ws-frame.h"

/* The states of ws.c's table. */
enum {
  GEV__WS_HANDSHAKE = 0, /* the opening handshake is under way */
  GEV__WS_OPEN,          /* messages both ways */
  GEV__WS_CLOSE_SENT,    /* our Close is out; waiting for the peer's */
  GEV__WS_CLOSING,       /* no more frames either way; TCP closing */
  GEV__WS_GONE,          /* the connection's on_close ran */
  GEV__WS_COUNT
};

/* The events of ws.c's table. */
enum {
  GEV__WE_OPENED = 0,  /* handshake done */
  GEV__WE_LOCAL_CLOSE, /* gev_ws_close (any thread), shutdown */
  GEV__WE_PEER_CLOSE,  /* the peer's Close frame */
  GEV__WE_FAIL,        /* protocol error, bad handshake, no memory */
  GEV__WE_TIMEOUT,     /* close, handshake or pong deadline */
  GEV__WE_TCP_CLOSED,  /* the gev_conn's on_close */
  GEV__WE_COUNT
};

struct gev_ws {
  gev_conn *c; /* set once the TCP connection exists; loop thread */
  gev_ws_handler h;
  gev_ws_options o;
  void *ctx;          /* the user's; any thread reads, loop thread writes */
  bool client;        /* masks what it sends, refuses masked frames */
  bool opened;        /* on_open ran: on_close is owed (else on_fail) */
  int hs_err;         /* client: why the handshake failed, for on_fail */
  pthread_mutex_t mu; /* state, the timer ids and every send */
  int state;          /* GEV__WS_*; under mu */
  size_t max_message;

  /* Receiving; loop thread. A frame's header is consumed once its payload
   * starts streaming into msg (the slow path). */
  bool in_frame;
  gev__ws_header fh;
  uint64_t frame_left; /* payload bytes of fh still to come */
  uint64_t frame_off;  /* payload bytes of fh seen (mask position) */
  unsigned msg_op;     /* opcode of the message being reassembled; 0 none */
  unsigned char *msg;
  size_t msg_len, msg_cap;
  gev__utf8 utf8;
  bool answers;       /* the handler queued output for the last data message */
  unsigned sent_here; /* frames queued in the loop's thread (wraps) */

  /* Closing; under mu. code/reason: what on_close reports. */
  bool got_close;
  int code;
  char reason[124];
  gev_timer_id close_timer, ping_timer, pong_timer;
  /* Our Close waits in a task of the loop (behind other threads' frames);
   * what follows it (end or close TCP) waits for it: the task runs it. */
  bool close_queued;
  int then_deferred; /* THEN_* of ws.c: what the task does after it */

  char *path;      /* request target; owned */
  char *protocol;  /* agreed subprotocol, "" for none; owned */
  char *request;   /* client: the handshake request to send; owned */
  char accept[32]; /* client: the Sec-WebSocket-Accept expected */
};

/* ws.c */
gev_ws *gev__ws_new(const gev_ws_handler *h, const gev_ws_options *wo,
                    void *ctx, bool client);
void gev__ws_free(void *ws); /* the gev_conn's context free function */
void gev__ws_attach(gev_ws *ws, gev_conn *c); /* context + free function */
int gev__ws_event(gev_ws *ws, int ev, int code, const char *reason);
extern const gev_handler gev__ws_conn_handler;
/* Arms a one-shot timer holding a reference to the connection; under mu. */
void gev__ws_arm(gev_ws *ws, gev_timer_id *slot, uint64_t ms, gev_task_fn fn);

/* A deadline (handshake or close) passed: a one-shot timer's callback. */
void gev__ws_on_timeout(void *arg);

/* ws-handshake.c: returns 1 when the handshake completed (consumed from
 * in), 0 when more bytes are needed, -1 when it failed (answered and
 * closing). */
int gev__ws_server_handshake(gev_ws *ws, ringbuffer *in, ringbuffer *out);
int gev__ws_client_handshake(gev_ws *ws, ringbuffer *in);
/* base64(SHA-1(key + GUID)): out has room for 29 bytes. */
void gev__ws_accept_key(const char *key, size_t len, char out[29]);
/* Builds the client's request into ws->request and ws->accept. */
int gev__ws_client_request(gev_ws *ws, const char *hostport, const char *path);

/* ws-server.c: the options of a gev_ws_server_new server, for on_connect. */
void gev__ws_server_on_connect(gev_conn *c);

#endif
