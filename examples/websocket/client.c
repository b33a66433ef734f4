/* ws-client - a WebSocket client on gev: sends every line of stdin as a
 * text message (or binary with -b), prints every text message it receives
 * as a line on stdout, and closes with 1000 once it has received COUNT
 * messages (-n; default: as many as it sent). It then prints
 * "closed CODE", or "closed CODE" as soon as the server closes. Exits 0
 * after a close, 1 on a failure or after 10 s (-t MS).
 *
 *   ws-client [-b] [-n COUNT] [-t MS] [-p PROTOCOLS] [-c CA] URL
 *
 * URL is ws://host:port/path, or wss:// in a build with libgev-tls: the
 * server's certificate is verified against the host's name (or IP
 * address) and CA (-c/--ca FILE; the system's store without it). */
#include <gev/gev.h>
#ifdef GEV_EXAMPLE_TLS
#include <gev/tls.h>
#endif

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gev_loop *loop;
static char **lines;
static size_t nlines;
static long want = -1, got;
static int opcode = GEV_WS_TEXT, status = 1;

static void on_open(gev_ws *ws)
{
  for (size_t i = 0; i < nlines; i++)
    if (gev_ws_send(ws, opcode, lines[i], strlen(lines[i])) < 0)
      gev_ws_close(ws, GEV_WS_CLOSE_INTERNAL, NULL);
  if (want == 0)
    gev_ws_close(ws, GEV_WS_CLOSE_NORMAL, NULL);
}

static void on_message(gev_ws *ws, int op, const void *p, size_t n)
{
  if (op == GEV_WS_TEXT)
    printf("%.*s\n", (int)n, (const char *)p);
  else
    printf("binary %zu\n", n);
  fflush(stdout);
  if (++got == want)
    gev_ws_close(ws, GEV_WS_CLOSE_NORMAL, NULL);
}

static void on_close(gev_ws *ws, int code, const char *reason)
{
  (void)ws;
  printf("closed %d%s%s\n", code, *reason ? " " : "", reason);
  status = 0;
  gev_loop_stop(loop);
}

static void on_fail(void *ctx, int err)
{
  (void)ctx;
  fprintf(stderr, "ws-client: %s\n", gev_strerror(err));
  gev_loop_stop(loop);
}

static void on_deadline(void *arg)
{
  (void)arg;
  fprintf(stderr, "ws-client: timed out\n");
  gev_loop_stop(loop);
}

static void read_lines(void)
{
  char buf[65536];

  while (fgets(buf, sizeof(buf), stdin)) {
    buf[strcspn(buf, "\n")] = '\0';
    lines = realloc(lines, (nlines + 1) * sizeof(*lines));
    if (!lines || !(lines[nlines++] = strdup(buf)))
      exit(1);
  }
}

int main(int argc, char **argv)
{
  gev_ws_handler h = {.on_open = on_open,
                      .on_message = on_message,
                      .on_close = on_close,
                      .on_fail = on_fail};
  gev_ws_options wo = {0};
  long timeout_ms = 10000;
  int c, r;

  static const struct option lo[] = {{"ca", required_argument, 0, 'c'},
                                     {0, 0, 0, 0}};
  const char *ca = NULL, *url;

  while ((c = getopt_long(argc, argv, "bn:t:p:c:", lo, NULL)) != -1) {
    switch (c) {
    case 'b': opcode = GEV_WS_BINARY; break;
    case 'n': want = atol(optarg); break;
    case 't': timeout_ms = atol(optarg); break;
    case 'p': wo.protocols = optarg; break;
    case 'c': ca = optarg; break;
    default:
      fprintf(stderr,
              "usage: %s [-b] [-n COUNT] [-t MS] [-p PROTOCOLS] [-c CA] URL\n",
              argv[0]);
      return 2;
    }
  }
  if (optind + 1 != argc)
    return 2;
  url = argv[optind];
  read_lines();
  if (want < 0)
    want = (long)nlines;
#ifdef GEV_EXAMPLE_TLS
  gev_tls_ctx *tls = NULL;
  if (strncmp(url, "wss://", 6) == 0) {
    gev_tls_options to = {.ca_file = ca};
    if (gev_tls_ctx_new(&tls, &to) < 0) {
      fprintf(stderr, "ws-client: %s\n", gev_tls_error());
      return 1;
    }
    if ((r = gev_tls_ws_options(&wo, tls, url)) < 0) {
      fprintf(stderr, "ws-client: %s: %s\n", url, gev_strerror(r));
      gev_tls_ctx_unref(tls);
      return 1;
    }
  }
#else
  if (strncmp(url, "wss://", 6) == 0 || ca) {
    fprintf(stderr, "ws-client: wss:// and --ca need a build with "
                    "libgev-tls (OpenSSL)\n");
    return 1;
  }
#endif
  if ((r = gev_loop_new(&loop)) < 0 ||
      (r = gev_ws_connect(loop, url, &h, &wo, NULL)) < 0)
    fprintf(stderr, "ws-client: %s\n", gev_strerror(r));
  else {
    gev_loop_run_after(loop, (uint64_t)timeout_ms, on_deadline, NULL);
    gev_loop_run(loop);
  }
  gev_loop_free(loop); /* NULL when it was not made */
#ifdef GEV_EXAMPLE_TLS
  gev_tls_ctx_unref(tls); /* after the loop: its connections used it */
#endif
  for (size_t i = 0; i < nlines; i++)
    free(lines[i]);
  free(lines);
  return status;
}
