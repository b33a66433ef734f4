/* netns-peer.c - the gev ends of the lossy-network tests (netns-test.sh).
 *
 *   netns-peer vanish ADDR USER_TIMEOUT_MS KEEPALIVE PUSH
 *     An echo server. Each connection gets TCP_USER_TIMEOUT (when > 0)
 *     and, with KEEPALIVE=1, keepalive probes after 1 s idle, 1 s apart,
 *     2 of them (gev has no option for either yet: setsockopt on
 *     gev_conn_fd in on_connect). With PUSH=1 it sends a byte every
 *     200 ms, so unacknowledged data waits when the peer vanishes. Prints
 *     "connected" and, at the first close, "closed" and exits 0.
 *
 *   netns-peer reconnect ADDR SECONDS
 *     A gev_client against an echo server: every 200 ms one message of 64
 *     checked bytes; the connection has TCP_USER_TIMEOUT 1500 ms, so a
 *     pulled link closes it and the client redials until the link is back.
 *     Exits 0 when, after a close, it connected again and exchanged at
 *     least 3 messages more, every byte checked. */
#include <gev/gev.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static gev_server *srv;
static gev_loop *loop;
static bool push;
static int user_timeout_ms, keepalive;

static void setopt(int fd, int level, int name, int v)
{
  if (setsockopt(fd, level, name, &v, sizeof(v)) < 0)
    perror("setsockopt");
}

static void tune(gev_conn *c, int uto)
{
  int fd = gev_conn_fd(c);

  if (uto > 0)
    setopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, uto);
  if (keepalive) {
    setopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    setopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, 1);
    setopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, 1);
    setopt(fd, IPPROTO_TCP, TCP_KEEPCNT, 2);
  }
}

static void tick(void *arg)
{
  gev_conn_send(arg, ".", 1);
}

static void v_connect(gev_conn *c)
{
  tune(c, user_timeout_ms);
  if (push)
    gev_conn_set_context(c, (void *)(uintptr_t)gev_loop_run_every(
                                gev_conn_loop(c), 200, tick, c));
  printf("connected\n");
  fflush(stdout);
}

static void v_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  ringbuffer_move(out, in, ringbuffer_len(in));
}

static void v_close(gev_conn *c)
{
  gev_timer_id t = (gev_timer_id)(uintptr_t)gev_conn_context(c);

  if (t)
    gev_loop_cancel(gev_conn_loop(c), t);
  printf("closed\n");
  fflush(stdout);
  gev_server_stop(srv);
}

static int vanish(char **argv)
{
  gev_handler h = {
      .on_connect = v_connect, .on_message = v_message, .on_close = v_close};
  gev_options o = {.address = argv[0], .num_loops = 1};
  int err;

  user_timeout_ms = atoi(argv[1]);
  keepalive = atoi(argv[2]);
  push = atoi(argv[3]);
  if ((err = gev_server_new(&srv, &h, &o)) < 0) {
    fprintf(stderr, "netns-peer: %s: %s\n", argv[0], gev_strerror(err));
    return 1;
  }
  printf("listening\n");
  fflush(stdout);
  err = gev_server_start(srv);
  gev_server_free(srv);
  return err < 0;
}

/* ---- reconnect ---------------------------------------------------------- */

enum { MSG = 64 };
static atomic_int sessions, closes, exchanged, after_close, bad;
static uint32_t sent_seq, got_seq;
static size_t got_off;
static gev_timer_id every;

static unsigned char pat(uint32_t seq, size_t i)
{
  return (unsigned char)(seq * 131u + (uint32_t)i * 7u);
}

static void send_one(void *arg)
{
  gev_client *cl = arg;
  gev_conn *c = gev_client_conn(cl);
  unsigned char m[MSG];

  if (!c || sent_seq != got_seq)
    return; /* not connected, or the last one still on its way */
  for (size_t i = 0; i < MSG; i++)
    m[i] = pat(sent_seq, i);
  if (gev_conn_send(c, m, MSG) == 0)
    sent_seq++;
}

static void r_connect(gev_conn *c)
{
  tune(c, 1500);
  if (atomic_load(&closes))
    atomic_store(&after_close, 0); /* count this session's exchanges */
  sent_seq = got_seq = 0;          /* a fresh connection starts over */
  got_off = 0;
  atomic_fetch_add(&sessions, 1);
  printf("connected (session %d)\n", atomic_load(&sessions));
  fflush(stdout);
}

static void r_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  unsigned char b[MSG];
  size_t n;

  (void)c, (void)out;
  while ((n = ringbuffer_read(in, b, MSG - got_off)) > 0) {
    for (size_t i = 0; i < n; i++)
      if (b[i] != pat(got_seq, got_off + i))
        atomic_fetch_add(&bad, 1);
    got_off += n;
    if (got_off == MSG) {
      got_off = 0;
      got_seq++;
      atomic_fetch_add(&exchanged, 1);
      if (atomic_load(&closes))
        atomic_fetch_add(&after_close, 1);
    }
  }
}

static void r_close(gev_conn *c)
{
  (void)c;
  atomic_fetch_add(&closes, 1);
  printf("closed\n");
  fflush(stdout);
}

static void r_result(gev_conn *c, int err, void *arg)
{
  (void)c, (void)arg;
  if (err < 0) {
    printf("connect: %s\n", gev_strerror(err));
    fflush(stdout);
  }
}

static void stop(void *arg)
{
  gev_loop_stop(arg);
}

static int reconnect(char **argv)
{
  gev_handler h = {
      .on_connect = r_connect, .on_message = r_message, .on_close = r_close};
  gev_client_options co = {.retry_min_ms = 200, .retry_max_ms = 1000};
  gev_client *cl;
  int err;

  co.connect.address = argv[0];
  co.connect.timeout_ms = 1000;
  co.connect.on_result = r_result;
  if ((err = gev_loop_new(&loop)) < 0 ||
      (err = gev_client_new(&cl, loop, &h, &co)) < 0) {
    fprintf(stderr, "netns-peer: %s\n", gev_strerror(err));
    return 1;
  }
  every = gev_loop_run_every(loop, 200, send_one, cl);
  gev_loop_run_after(loop, (uint64_t)atoi(argv[1]) * 1000u, stop, loop);
  gev_loop_run(loop);
  gev_client_free(cl);
  gev_loop_free(loop);
  printf("sessions %d closes %d exchanged %d after_reconnect %d bad %d\n",
         atomic_load(&sessions), atomic_load(&closes), atomic_load(&exchanged),
         atomic_load(&after_close), atomic_load(&bad));
  return atomic_load(&bad) || atomic_load(&sessions) < 2 ||
         atomic_load(&after_close) < 3;
}

int main(int argc, char **argv)
{
  if (argc == 6 && !strcmp(argv[1], "vanish"))
    return vanish(argv + 2);
  if (argc == 4 && !strcmp(argv[1], "reconnect"))
    return reconnect(argv + 2);
  fprintf(stderr, "usage: netns-peer vanish ADDR USER_TIMEOUT_MS KEEPALIVE "
                  "PUSH | reconnect ADDR SECONDS\n");
  return 2;
}
