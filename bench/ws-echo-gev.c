/* ws-echo-gev - the WebSocket echo server on gev for bench/run-ws: every
 * message back with its opcode, from inside on_message.
 *
 *   ws-echo-gev [-p PORT] [-l LOOPS]     prints "listening on 127.0.0.1:PORT"
 */
#include <gev/gev.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void on_message(gev_ws *ws, int op, const void *p, size_t n)
{
  gev_ws_send(ws, op, p, n);
}

int main(int argc, char **argv)
{
  gev_ws_handler h = {.on_message = on_message};
  gev_options opt = {.num_loops = 1};
  char addr[64];
  int port = 0, ch;
  gev_server *s;

  while ((ch = getopt(argc, argv, "p:l:")) != -1) {
    if (ch == 'p')
      port = atoi(optarg);
    else if (ch == 'l')
      opt.num_loops = atoi(optarg);
    else
      return 2;
  }
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  opt.address = addr;
  if (gev_ws_server_new(&s, &h, NULL, &opt) < 0)
    return 1;
  printf("listening on 127.0.0.1:%d\n", gev_server_port(s));
  fflush(stdout);
  gev_server_start(s);
  gev_ws_server_free(s);
  return 0;
}
