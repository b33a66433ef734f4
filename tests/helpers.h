/* helpers.h - shared test helpers: a server on a background thread,
 * blocking loopback clients with timeouts, bounded waits, and counts of
 * this process's fds and threads. Every wait is bounded in time. */
#ifndef GEV_TEST_HELPERS_H
#define GEV_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <check.h>
#include <pthread.h>

#include <gev/gev.h>

/* One test case: a TCase of its own named after it, with a timeout. */
typedef struct th_case {
  const char *name;
  const TTest *fn;
  int timeout; /* seconds */
} th_case;

/* A suite with one TCase per case (fork mode keeps a crash to its case). */
Suite *th_suite(const char *name, const th_case *cases, size_t n);
/* Runs the suite with srunner_run_all(CK_ENV) and frees it; returns the
 * process exit status (1 when any case failed). */
int th_run(Suite *s);

/* Counters shared between callbacks and the test thread (seq_cst). */
int th_ld(const int *v);
void th_st(int *v, int x);
void th_inc(int *v);

/* A counting echo handler: th_connects and th_closes count the callbacks,
 * th_violations counts writes `out` refused (must stay 0). */
extern int th_connects, th_closes, th_violations;
extern const gev_handler th_echo_handler;
/* The handler's pieces, for tables that mix them with others. */
void th_count_connect(gev_conn *c);
void th_count_close(gev_conn *c);
void th_echo_msg(gev_conn *c, ringbuffer *in, ringbuffer *out);
void th_reset_counters(void);

/* pthread_join, failing the test after `seconds`; returns the result. */
void *th_join(pthread_t t, int seconds);

/* A gev server running gev_server_start on its own thread. */
typedef struct th_server {
  gev_server *s;
  int port;
  int start_result;
  void *thread; /* pthread_t, kept opaque */
} th_server;

/* Creates and starts a server; fails the current test on error. If
 * opt->address is NULL, "127.0.0.1:0" is used. */
th_server *th_start(const gev_handler *h, gev_options *opt);
/* gev_server_stop, join (bounded: fails the test after 20 s), free. */
void th_stop(th_server *t);

/* Blocking TCP client to 127.0.0.1:port with 10 s send/recv timeouts and
 * TCP_NODELAY; -1 on failure. */
int th_connect(int port);
/* Same to an address: "unix:/path", "unix:@abstract", "[::1]:port" or
 * "ip:port". */
int th_connect_addr(const char *addr);
/* Writes all or returns false. */
bool th_write_all(int fd, const void *p, size_t n);
/* Reads exactly n bytes or returns false (EOF, error or timeout). */
bool th_read_exact(int fd, void *p, size_t n);
/* True when the peer closed (read returns 0) within timeout_ms. */
bool th_wait_eof(int fd, int timeout_ms);

/* Polls pred(arg) every millisecond until true or timeout_ms passes. */
bool th_wait_until(bool (*pred)(void *arg), void *arg, int timeout_ms);
/* Polls an int until it reaches at least want, or timeout_ms passes. */
bool th_wait_int(const volatile int *v, int want, int timeout_ms);

int th_count_fds(void);
int th_count_threads(void);
/* Threads are reaped a moment after pthread_join returns, so a thread
 * count is awaited: true once it is at most `max`, within timeout_ms. */
bool th_wait_threads(int max, int timeout_ms);
/* Threads of this process whose name (comm) is `name`, and the wait for
 * at most `max` of them (true within timeout_ms). */
typedef struct th_named {
  const char *name;
  int max;
} th_named;
int th_count_threads_named(const char *name);
bool th_wait_threads_named(const char *name, int max, int timeout_ms);
uint64_t th_now_ms(void);
/* Process CPU time (user + system) in milliseconds. */
uint64_t th_cpu_ms(void);
/* The echo handler's body (as in examples/echo): moves from `in` to `out`
 * what fits under out's limit. Returns 1 when `out` refused the move, which
 * must not happen: the room was computed from the limit. */
int th_echo_move(ringbuffer *in, ringbuffer *out);
/* One blocking round trip of n bytes derived from seed through an echo
 * server; true when they all came back intact. */
bool th_echo_roundtrip(int fd, size_t n, uint32_t seed);
/* Fills p with bytes derived from seed (for verifiable random payloads). */
void th_fill(void *p, size_t n, uint32_t seed);

/* Runs fn(arg) in loop l's thread and waits for it (bounded). Tasks posted
 * from one thread run in order, so this also fences what that thread
 * posted before. */
void th_run_in_loop(gev_loop *l, void (*fn)(void *), void *arg);
/* A task that does nothing (for th_run_in_loop as a fence). */
void th_noop(void *arg);

/* A standalone loop (gev_loop_new) running gev_loop_run on its own thread. */
typedef struct th_loop_thread {
  gev_loop *l;
  pthread_t t;
  int rc;
} th_loop_thread;
void th_lt_start(th_loop_thread *x);
/* gev_loop_stop and join (bounded); returns gev_loop_run's result. The
 * loop is not freed. */
int th_lt_stop(th_loop_thread *x);

/* A port on 127.0.0.1 where nothing listens: bound, then closed. */
int th_free_port(void);
/* A plain listening socket (not gev) on 127.0.0.1 and an ephemeral port,
 * stored in *port: the test accepts and reads when it wants to. */
int th_listen_plain(int backlog, int *port);
/* The same on a given port (SO_REUSEADDR); -1 when it cannot bind. */
int th_listen_port(int port, int backlog);
/* accept with a 10 s bound (fails the test); the accepted socket gets 10 s
 * I/O timeouts. */
int th_accept(int lfd);

#endif
