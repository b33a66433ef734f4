/* example.c - see example.h. */
#include "example.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GEV_EXAMPLE_TLS
#include <gev/tls.h>
#endif

/* The server the signal handler acts on; NULL again before it is freed, so
 * that a signal arriving after gev_server_start returned (it failed, or a
 * shutdown ended) never reaches a freed server. Signals run on this
 * thread (the workers block them), so the store orders them. */
static _Atomic(gev_server *) running;
static int drain_ms = 5000;

/* The first SIGINT or SIGTERM shuts down gracefully (connections finish,
 * bounded by --drain-ms); a second one, while that runs, stops at once.
 * Both calls are async-signal-safe. */
static void on_signal(int sig)
{
  gev_server *s = atomic_load(&running);

  (void)sig;
  if (s && gev_server_shutdown(s, (uint64_t)drain_ms) == -EALREADY)
    gev_server_stop(s);
}

/* SIGUSR1 asks for a one-line stats summary on stderr. The handler only
 * sets a flag (printing is not async-signal-safe); a timer on the acceptor
 * loop polls it every STATS_POLL_MS. The first tick that sees it asks the
 * loops for their figures (from a loop's thread gev_server_stats does not
 * wait, it reads the last publication), the next one prints them. */
#define STATS_POLL_MS 200
static atomic_bool stats_wanted; /* lock-free: safe in a signal handler */

static void on_usr1(int sig)
{
  (void)sig;
  atomic_store(&stats_wanted, true);
}

static void stats_tick(void *arg)
{
  static bool asked;
  gev_server *s = arg;
  gev_stats st = {0};

  if (!asked && !atomic_exchange(&stats_wanted, false))
    return;
  gev_server_stats(s, &st);
  if (!asked) {
    asked = true; /* the loops publish within a pass; print next tick */
    return;
  }
  asked = false;
  fprintf(
      stderr,
      "stats: connections open=%llu accepted=%llu closed=%llu "
      "bytes in=%llu out=%llu messages=%llu passes=%llu lag_ms=%llu\n",
      (unsigned long long)st.conns_open, (unsigned long long)st.conns_accepted,
      (unsigned long long)st.conns_closed, (unsigned long long)st.bytes_read,
      (unsigned long long)st.bytes_written, (unsigned long long)st.messages,
      (unsigned long long)st.loop_passes, (unsigned long long)st.lag_max_ms);
}

static void usage(const char *prog, const ex_opt *extra, int nextra, int st)
{
  FILE *f = st ? stderr : stdout;

  fprintf(f,
          "usage: %s [-p PORT] [-l LOOPS] [-a HOST] [--unix PATH] "
          "[-L ADDR]... [--reuse-port] [--drain-ms N]",
          prog);
  for (int i = 0; i < nextra; i++)
    fprintf(f, " [-%c %s]", extra[i].key, extra[i].name);
  fprintf(f, "\n  -p, --port N      TCP port, 0 picks a free one (default 0)\n"
             "  -l, --loops N     worker loops, 0 = one per CPU (default 1)\n"
             "  -a, --address H   host to bind (default 127.0.0.1)\n"
             "      --unix PATH   listen on a unix socket instead\n"
             "  -L, --listen ADDR listen on ADDR instead (repeatable):\n"
             "                    HOST:PORT, [V6]:PORT, unix:PATH, fd:N,\n"
             "                    fd:NAME (systemd socket activation)\n"
             "      --reuse-port  one SO_REUSEPORT listener per loop\n"
             "      --drain-ms N  on SIGINT/SIGTERM, let connections finish\n"
             "                    for up to N ms (default 5000); a second\n"
             "                    signal stops at once\n");
#ifdef GEV_EXAMPLE_TLS
  fprintf(f, "      --tls-cert F  serve TLS with this PEM certificate chain\n"
             "      --tls-key F   and this PEM private key (default: in F)\n");
#endif
  for (int i = 0; i < nextra; i++)
    fprintf(f, "  -%c, --%-12s %s\n", extra[i].key, extra[i].name,
            extra[i].help);
  exit(st);
}

int ex_int(const char *name, const char *v)
{
  char *end;
  long n = strtol(v, &end, 10);

  if (!*v || *end || n < 0 || n > 1000000000) {
    fprintf(stderr, "bad value for %s: %s\n", name, v);
    exit(2);
  }
  return (int)n;
}

void ex_parse(int argc, char **argv, ex_args *a, const ex_opt *extra,
              int nextra)
{
  struct option lo[32] = {
      {"port", required_argument, 0, 'p'},
      {"loops", required_argument, 0, 'l'},
      {"address", required_argument, 0, 'a'},
      {"unix", required_argument, 0, 'U'},
      {"reuse-port", no_argument, 0, 'R'},
      {"drain-ms", required_argument, 0, 'D'},
      {"help", no_argument, 0, 'h'},
      {"listen", required_argument, 0, 'L'},
#ifdef GEV_EXAMPLE_TLS
      {"tls-cert", required_argument, 0, 'T'},
      {"tls-key", required_argument, 0, 'K'},
#endif
  };
  char so[64] = "p:l:a:hL:";
  int nlo = 8, c;

#ifdef GEV_EXAMPLE_TLS
  nlo += 2;
#endif
  *a = (ex_args){.port = 0, .loops = 1, .host = "127.0.0.1"};
  for (int i = 0; i < nextra && nlo < 31; i++) {
    lo[nlo++] =
        (struct option){extra[i].name, required_argument, 0, extra[i].key};
    size_t len = strlen(so);
    so[len] = extra[i].key;
    so[len + 1] = ':';
    so[len + 2] = '\0';
  }
  while ((c = getopt_long(argc, argv, so, lo, NULL)) != -1) {
    switch (c) {
    case 'p': a->port = ex_int("--port", optarg); break;
    case 'l': a->loops = ex_int("--loops", optarg); break;
    case 'a': a->host = optarg; break;
    case 'U': a->unix_path = optarg; break;
    case 'R': a->reuse_port = true; break;
    case 'D': drain_ms = ex_int("--drain-ms", optarg); break;
    case 'L':
      if (a->nlisten == EX_MAX_LISTEN)
        usage(argv[0], extra, nextra, 2);
      a->listen[a->nlisten++] = optarg;
      break;
#ifdef GEV_EXAMPLE_TLS
    case 'T': a->tls_cert = optarg; break;
    case 'K': a->tls_key = optarg; break;
#endif
    case 'h': usage(argv[0], extra, nextra, 0); break;
    default: {
      int i;
      for (i = 0; i < nextra && extra[i].key != c; i++)
        ;
      if (i == nextra)
        usage(argv[0], extra, nextra, 2);
      *extra[i].value = optarg;
    }
    }
  }
  if (optind != argc || a->port > 65535 || (a->tls_key && !a->tls_cert))
    usage(argv[0], extra, nextra, 2);
}

#ifdef GEV_EXAMPLE_TLS
/* --tls-cert: every connection of the server is TLS. NULL without it;
 * exits 1 when the certificate or key cannot be used. */
static gev_tls_ctx *tls_setup(const ex_args *a, gev_options *opt)
{
  gev_tls_options to = {.cert_file = a->tls_cert, .key_file = a->tls_key};
  gev_tls_ctx *tls;

  if (!a->tls_cert)
    return NULL;
  if (gev_tls_ctx_new(&tls, &to) < 0) {
    fprintf(stderr, "tls: %s\n", gev_tls_error());
    exit(1);
  }
  gev_tls_server_options(opt, tls);
  return tls;
}
#endif

void ex_apply(const ex_args *a, gev_options *opt)
{
  static char addr[300];

  opt->num_loops = a->loops;
  opt->reuse_port = a->reuse_port;
  if (a->nlisten) {
    opt->addresses = a->listen;
    return;
  }
  if (a->unix_path)
    snprintf(addr, sizeof(addr), "unix:%s", a->unix_path);
  else if (strchr(a->host, ':'))
    snprintf(addr, sizeof(addr), "[%s]:%d", a->host, a->port);
  else
    snprintf(addr, sizeof(addr), "%s:%d", a->host, a->port);
  opt->address = addr;
}

/* One line per address, once the server accepts on it. */
static void print_listening(gev_server *s, const gev_options *opt,
                            const ex_args *a)
{
  if (opt->addresses) {
    for (int i = 0; opt->addresses[i]; i++) {
      int port = gev_server_listener_port(s, i);
      printf("listening on %s", opt->addresses[i]);
      printf(port > 0 ? " port %d\n" : "\n", port);
    }
  } else if (a->unix_path) {
    printf("listening on unix:%s\n", a->unix_path);
  } else if (strchr(a->host, ':')) {
    printf("listening on [%s]:%d\n", a->host, gev_server_port(s));
  } else {
    printf("listening on %s:%d\n", a->host, gev_server_port(s));
  }
  fflush(stdout);
}

int ex_run(const gev_handler *h, gev_options *opt, const ex_args *a,
           void (*ready)(gev_server *s))
{
  struct sigaction sa = {.sa_handler = on_signal};
  gev_server *s;
  int err;

#ifdef GEV_EXAMPLE_TLS
  gev_tls_ctx *tls = tls_setup(a, opt);
#endif

  if (!opt->address && !opt->addresses)
    ex_apply(a, opt);
  err = gev_server_new(&s, h, opt);
#ifdef GEV_EXAMPLE_TLS
  if (err < 0)
    gev_tls_ctx_unref(tls);
#endif
  if (err < 0) {
    fprintf(stderr, "cannot listen on %s: %s\n",
            opt->addresses ? "the --listen addresses" : opt->address,
            gev_strerror(err));
    return 1;
  }
  if (ready)
    ready(s);
  atomic_store(&running, s);
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  /* Without the timer SIGUSR1 only sets a flag nobody reads. */
  gev_server_run_every(s, STATS_POLL_MS, stats_tick, s);
  print_listening(s, opt, a);
  err = gev_server_start(s);
  atomic_store(&running, NULL);
  gev_server_free(s);
#ifdef GEV_EXAMPLE_TLS
  gev_tls_ctx_unref(tls); /* after the server: no connection uses it now */
#endif
  if (err < 0) {
    fprintf(stderr, "server failed: %s\n", gev_strerror(err));
    return 1;
  }
  return 0;
}
