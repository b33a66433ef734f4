/* sc-tls.c - a TLS echo server (libgev-tls, renamed like the core, and
 * OpenSSL's allocations in the library's threads failed too) and three
 * OpenSSL clients on the test's threads, whose allocations are immune. */
#include "harness.h"

#include <gev/tls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CLIENTS = 3, LEN = 32 * 1024, CHUNK = 4096 };

typedef struct tls_client {
  SSL_CTX *ctx;
  int port, outcome;
  uint32_t seed;
  pthread_t t;
} tls_client;

static void on_connect(gev_conn *c)
{
  fr_track_connect(c);
}
static void on_close(gev_conn *c)
{
  fr_track_close(c);
}

static int dial(int port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  struct timeval tv = {.tv_sec = 5};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A read that failed: a timeout is a hang, anything else a close. */
static int why(void)
{
  return errno == EAGAIN ? CL_TIMEOUT : CL_CLOSED;
}

static int session(SSL *s, uint32_t seed)
{
  unsigned char out[CHUNK], in[CHUNK];

  if (SSL_connect(s) != 1 || SSL_write(s, "E", 1) != 1)
    return why();
  for (size_t off = 0; off < LEN; off += CHUNK) {
    size_t got = 0;
    for (size_t i = 0; i < CHUNK; i++)
      out[i] = fr_pat(seed, off + i);
    if (SSL_write(s, out, CHUNK) != CHUNK)
      return why();
    while (got < CHUNK) {
      int n = SSL_read(s, in + got, (int)(CHUNK - got));
      if (n <= 0)
        return why();
      got += (size_t)n;
    }
    if (memcmp(in, out, CHUNK))
      return CL_BAD;
  }
  SSL_shutdown(s); /* every byte came back: the rest is courtesy */
  return CL_FULL;
}

static void *client_main(void *arg)
{
  tls_client *c = arg;
  int fd;
  SSL *s;

  fault_immune(true);
  fd = dial(c->port);
  if (fd < 0) {
    c->outcome = CL_NOCONN;
    return NULL;
  }
  s = SSL_new(c->ctx);
  SSL_set_fd(s, fd);
  SSL_set_tlsext_host_name(s, "localhost");
  c->outcome = session(s, c->seed);
  SSL_free(s);
  close(fd);
  ERR_clear_error();
  OPENSSL_thread_stop();
  return NULL;
}

static SSL_CTX *client_ctx(const char *dir)
{
  char ca[512];
  SSL_CTX *x;

  fault_immune(true);
  snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
  x = SSL_CTX_new(TLS_client_method());
  if (x && SSL_CTX_load_verify_locations(x, ca, NULL) == 1)
    SSL_CTX_set_verify(x, SSL_VERIFY_PEER, NULL);
  fault_immune(false);
  return x;
}

int sc_tls(fault_run *r)
{
  const char *dir = getenv("FAULT_TLS_DIR");
  char cert[512], key[512];
  gev_tls_options to = {.cert_file = cert, .key_file = key};
  gev_handler h = {.on_connect = on_connect,
                   .on_message = fr_echo_message,
                   .on_close = on_close};
  gev_options o = {.num_loops = 2};
  tls_client cl[CLIENTS];
  gev_tls_ctx *tls;
  SSL_CTX *cctx;
  fr_server sv;
  int err, served = 0;

  if (!dir)
    return fr_fail(r, "FAULT_TLS_DIR not set");
  snprintf(cert, sizeof(cert), "%s/server.pem", dir);
  snprintf(key, sizeof(key), "%s/server.key", dir);
  fr_logger_install();
  if (!(cctx = client_ctx(dir)))
    return fr_fail(r, "client SSL_CTX");
  if ((err = gev_tls_ctx_new(&tls, &to)) < 0) {
    r->gev_error = err;
    SSL_CTX_free(cctx);
    return fr_finish(r, 0, CLIENTS, true);
  }
  gev_tls_server_options(&o, tls);
  if ((err = fr_server_open(&sv, &h, &o)) < 0) {
    r->gev_error = err;
    gev_tls_ctx_unref(tls);
    SSL_CTX_free(cctx);
    return fr_finish(r, 0, CLIENTS, true);
  }
  for (int i = 0; i < CLIENTS; i++) {
    cl[i] = (tls_client){
        .ctx = cctx, .port = gev_server_port(sv.s), .seed = (uint32_t)(i + 40)};
    pthread_create(&cl[i].t, NULL, client_main, &cl[i]);
  }
  for (int i = 0; i < CLIENTS; i++) {
    pthread_join(cl[i].t, NULL);
    served += cl[i].outcome == CL_FULL;
    if (cl[i].outcome == CL_BAD || cl[i].outcome == CL_TIMEOUT)
      fr_fail(r, "TLS client %d: %s", i, fr_outcome_name(cl[i].outcome));
  }
  err = fr_server_close(&sv, 0);
  gev_tls_ctx_unref(tls);
  fault_immune(true);
  SSL_CTX_free(cctx);
  fault_immune(false);
  r->gev_error = err;
  return fr_finish(r, served, CLIENTS, err < 0);
}
