/* udp-echo - the RFC 862 echo service over UDP: every datagram is sent
 * back to its sender. RFC 862 defines the service over TCP too, and the
 * same worker loops serve both on the one port: the TCP side is the echo
 * example's handler, the UDP side a gev_udp_server with one SO_REUSEPORT
 * socket per loop (the kernel spreads senders over the loops).
 *
 * Each wake-up of a loop reads up to --batch datagrams with one recvmmsg;
 * the replies queued by on_datagram leave together with one sendmmsg. With
 * --unix PATH, TCP listens on PATH and UDP on the datagram socket
 * PATH.dgram. */
#include "../common/example.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gev/udp.h>

static ex_args args;
static int batch;
static gev_udp_server *udp;

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  size_t lim = ringbuffer_limit(out), used = ringbuffer_len(out);

  (void)c;
  ringbuffer_move(out, in, lim > used ? lim - used : 0);
}

/* A truncated datagram (unix sockets only) is not echoed: half of one is
 * not what was sent. An unnamed unix sender cannot be answered. */
static void on_datagram(gev_udp *u, const gev_udp_datagram *d)
{
  if (d->peer_len && !d->truncated)
    gev_udp_send_to(u, d->peer, d->peer_len, d->data, d->len);
}

/* Before the server starts: UDP on the port TCP got. */
static void add_udp(gev_server *s)
{
  gev_udp_handler h = {.on_datagram = on_datagram};
  gev_udp_options o = {.batch = batch};
  char addr[300];
  int err;

  if (args.unix_path)
    snprintf(addr, sizeof(addr), "unix:%s.dgram", args.unix_path);
  else if (strchr(args.host, ':'))
    snprintf(addr, sizeof(addr), "[%s]:%d", args.host, gev_server_port(s));
  else
    snprintf(addr, sizeof(addr), "%s:%d", args.host, gev_server_port(s));
  o.address = addr;
  if ((err = gev_udp_server_new(&udp, s, &h, &o)) < 0) {
    fprintf(stderr, "cannot serve UDP on %s: %s\n", addr, gev_strerror(err));
    exit(1);
  }
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message};
  gev_options opt = {0};
  const char *batch_s = "0";
  ex_opt extra[] = {
      {"batch", 'B', "datagrams per recvmmsg, 1..64 (0 = 32)", &batch_s}};
  int st;

  ex_parse(argc, argv, &args, extra, 1);
  batch = ex_int("--batch", batch_s);
  st = ex_run(&h, &opt, &args, add_udp);
  gev_udp_server_free(udp); /* after the server: its loops closed it */
  return st;
}
