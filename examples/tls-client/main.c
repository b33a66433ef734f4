/* tls-client - connect to HOST:PORT over TLS, verify the server, send
 * stdin and print what comes back on stdout (with the echo example: an
 * echo). One line about the session goes to stderr.
 *
 *     tls-client --ca ca.pem localhost:7000 < file
 *
 * The certificate must chain to --ca (or the system store) and carry the
 * host name (or --name NAME). At the end of stdin the client half-closes
 * (close_notify and FIN) and keeps printing until the server closes.
 *
 * The connection lives on a standalone loop in the main thread; stdin is
 * read by a second thread that hands each chunk over with gev_conn_send,
 * which is safe from any thread, keeping a window of bytes in flight (see
 * WINDOW). */
#include <gev/gev.h>
#include <gev/tls.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static gev_loop *loop;
static int status = 1; /* 0 once connected and closed */
static pthread_t pump;
static atomic_int pump_state; /* 1 running, 2 finished */

/* The pump keeps at most WINDOW bytes on their way: the library stops
 * reading a connection whose output is above half its cap, and two peers
 * that both stop reading (this client, its output full of stdin; an echo
 * server, its output full of replies nobody reads) wait for each other
 * for ever. Under the window the client never pauses, so it reads all the
 * replies, and the server's output drains. The loop reopens the window
 * once the output is down to a quarter of it (gev_conn_notify_drain). */
#define WINDOW (256 * 1024)

static pthread_mutex_t win_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t win_cv = PTHREAD_COND_INITIALIZER;
static size_t in_flight; /* sent since the window last reopened */
static bool win_closed;

static void reopen(gev_conn *c, void *arg)
{
  (void)c;
  (void)arg;
  pthread_mutex_lock(&win_mu);
  in_flight = 0;
  win_closed = false;
  pthread_cond_signal(&win_cv);
  pthread_mutex_unlock(&win_mu);
}

/* In the loop: tell the pump when the output is low again. */
static void watch_drain(void *arg)
{
  if (gev_conn_notify_drain(arg, WINDOW / 4, reopen, NULL) < 0)
    reopen(arg, NULL); /* closed: let the pump find out from its send */
}

/* Waits while the window is closed; closes it behind a full one. */
static void take_window(gev_conn *c, size_t n)
{
  pthread_mutex_lock(&win_mu);
  while (win_closed)
    pthread_cond_wait(&win_cv, &win_mu);
  in_flight += n;
  if (in_flight >= WINDOW) {
    win_closed = true;
    if (gev_loop_post(loop, watch_drain, c) < 0)
      win_closed = false; /* the loop has stopped: sends will fail */
  }
  pthread_mutex_unlock(&win_mu);
}

static void *pump_stdin(void *arg)
{
  gev_conn *c = arg; /* our reference, taken in on_connect */
  char buf[16384];
  ssize_t n;

  while ((n = read(0, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    int r = 0;
    if (n <= 0)
      continue;
    take_window(c, (size_t)n);
    while ((r = gev_conn_send(c, buf, (size_t)n)) == -ENOBUFS)
      nanosleep(&(struct timespec){0, 1000000}, NULL); /* output is full */
    if (r < 0)
      break; /* closed meanwhile */
  }
  gev_conn_shutdown_write(c);
  gev_conn_unref(c);
  atomic_store(&pump_state, 2);
  return NULL;
}

static void on_connect(gev_conn *c)
{
  char subject[256] = "";
  const char *alpn = gev_tls_alpn(c);

  if (!gev_tls_is_tls(c)) {
    fprintf(stderr, "connected: plaintext\n");
  } else {
    gev_tls_peer_subject(c, subject, sizeof(subject));
    fprintf(stderr, "connected: %s %s alpn=%s%s peer=%s\n", gev_tls_version(c),
            gev_tls_cipher(c), alpn ? alpn : "-",
            gev_tls_session_reused(c) ? " resumed" : "", subject);
  }
  gev_conn_ref(c);
  atomic_store(&pump_state, 1);
  if (pthread_create(&pump, NULL, pump_stdin, c) != 0) {
    atomic_store(&pump_state, 0);
    gev_conn_unref(c);
    gev_conn_close(c);
  }
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  struct iovec seg[2];
  size_t n = ringbuffer_peek(in, ringbuffer_len(in), seg);

  (void)c;
  (void)out;
  for (int i = 0; i < 2; i++) /* an empty segment may have no base */
    if (seg[i].iov_len)
      fwrite(seg[i].iov_base, 1, seg[i].iov_len, stdout);
  fflush(stdout);
  ringbuffer_retrieve(in, n);
}

static void on_close(gev_conn *c)
{
  (void)c;
  status = 0;
  gev_loop_stop(loop);
}

static void on_result(gev_conn *c, int err, void *arg)
{
  if (c)
    return;
  fprintf(stderr, "tls-client: cannot connect to %s: %s\n", (char *)arg,
          gev_strerror(err));
  gev_loop_stop(loop);
}

static void usage(int st)
{
  fprintf(
      st ? stderr : stdout,
      "usage: tls-client [--ca FILE] [--name NAME] [--alpn P1,P2]\n"
      "                  [--cert FILE --key FILE] [--insecure] [--plain]\n"
      "                  HOST:PORT\n"
      "  --plain   no TLS: the same client over plaintext (to measure what\n"
      "            TLS costs beside it)\n");
  exit(st);
}

/* "h2,http/1.1" into a NULL-terminated list (modifies s). */
static void split_alpn(char *s, const char **list, int max)
{
  int n = 0;

  for (char *p = strtok(s, ","); p && n < max - 1; p = strtok(NULL, ","))
    list[n++] = p;
  list[n] = NULL;
}

int main(int argc, char **argv)
{
  static const struct option lo[] = {{"ca", required_argument, 0, 'c'},
                                     {"name", required_argument, 0, 'n'},
                                     {"alpn", required_argument, 0, 'a'},
                                     {"cert", required_argument, 0, 'C'},
                                     {"key", required_argument, 0, 'K'},
                                     {"insecure", no_argument, 0, 'k'},
                                     {"plain", no_argument, 0, 'P'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  gev_handler h = {
      .on_connect = on_connect, .on_message = on_message, .on_close = on_close};
  gev_tls_options to = {0};
  const char *name = NULL, *alpn[8];
  bool plain = false;
  gev_tls_ctx *tls;
  int opt, err;

  while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (opt) {
    case 'c': to.ca_file = optarg; break;
    case 'n': name = optarg; break;
    case 'a': split_alpn(optarg, alpn, 8), to.alpn = alpn; break;
    case 'C': to.cert_file = optarg; break;
    case 'K': to.key_file = optarg; break;
    case 'k': to.verify = GEV_TLS_VERIFY_NONE; break;
    case 'P': plain = true; break;
    case 'h': usage(0); break;
    default: usage(2);
    }
  }
  if (optind != argc - 1)
    usage(2);
  if (gev_tls_ctx_new(&tls, &to) < 0) {
    fprintf(stderr, "tls-client: %s\n", gev_tls_error());
    return 1;
  }
  gev_connect_options co = {.address = argv[optind],
                            .timeout_ms = 10000,
                            .on_result = on_result,
                            .arg = argv[optind]};
  if ((!plain && (err = gev_tls_connect_options(&co, tls, name)) < 0) ||
      (err = gev_loop_new(&loop)) < 0 ||
      (err = gev_loop_connect(loop, &h, &co)) < 0) {
    fprintf(stderr, "tls-client: %s: %s\n", argv[optind], gev_strerror(err));
    return 1;
  }
  gev_loop_run(loop);
  /* A reader still blocked in read() (a terminal) is left to exit(); one
   * that saw the end of stdin is joined, so nothing is left behind. */
  if (atomic_load(&pump_state) != 1) {
    if (atomic_load(&pump_state) == 2)
      pthread_join(pump, NULL);
    gev_loop_free(loop);
    gev_tls_ctx_unref(tls);
  }
  return status;
}
