/* example.h - command line and run loop shared by the example servers.
 *
 * Every example takes -p/--port N (0 picks a free port), -l/--loops N,
 * -a/--address HOST (default 127.0.0.1), -u... per example, and prints one
 * line "listening on HOST:PORT" once it accepts connections. Instead of
 * host and port, -L/--listen ADDR (repeatable, up to EX_MAX_LISTEN) takes
 * any address gev_options.addresses takes ("[::]:8080", "unix:/path",
 * "fd:3", "fd:NAME" under systemd), and prints "listening on ADDR" (with
 * " port N" for TCP) for each. SIGINT or
 * SIGTERM shuts it down gracefully (gev_server_shutdown, bounded by
 * --drain-ms N, default 5000); a second signal stops it at once. SIGUSR1
 * prints one line of statistics ("stats: connections open=N ...") on
 * stderr, within half a second. */
#ifndef GEV_EXAMPLE_H
#define GEV_EXAMPLE_H

#include <gev/gev.h>

/* An example-specific option taking a value: --name VALUE or -k VALUE. */
typedef struct ex_opt {
  const char *name;
  char key;
  const char *help;
  const char **value; /* receives the argument; keeps its default otherwise */
} ex_opt;

#define EX_MAX_LISTEN 16

typedef struct ex_args {
  const char *listen[EX_MAX_LISTEN + 1]; /* --listen, NULL-terminated */
  int nlisten;
  int port;
  int loops;
  const char *host;
  const char *unix_path;
  bool reuse_port;
  /* --tls-cert FILE / --tls-key FILE (examples built with libgev-tls,
   * GEV_EXAMPLE_TLS): serve TLS on the same port. */
  const char *tls_cert;
  const char *tls_key;
} ex_args;

/* Parses argv; prints usage and exits 2 on bad input, 0 on --help. */
void ex_parse(int argc, char **argv, ex_args *a, const ex_opt *extra,
              int nextra);

/* Fills the address, loops and reuse_port of opt from a (the string is
 * static, valid until the next call). */
void ex_apply(const ex_args *a, gev_options *opt);

/* Creates the server, prints "listening on HOST:PORT", runs until a
 * SIGINT or SIGTERM shutdown has finished, frees it. If ready is not NULL it is
 * called with the server before it starts (to add timers). Returns the process
 * exit status. */
int ex_run(const gev_handler *h, gev_options *opt, const ex_args *a,
           void (*ready)(gev_server *s));

/* Parses a non-negative int option value or exits 2. */
int ex_int(const char *name, const char *v);

#endif
