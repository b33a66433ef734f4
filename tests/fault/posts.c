/* posts.c - regression tests on the failure-injection layer for a post to
 * a loop (a task for it to run) that fails for want of memory: the loop is
 * held inside a task with its queue full, so that the next post must grow
 * the queue, and that one realloc fails.
 *
 * udp_inbox: a cross-thread UDP send whose post fails must not strand a
 * datagram that another thread's send queued meanwhile. Sends from other
 * threads gather in the socket's inbox, and only the first of a batch posts the
 * task that takes them to the loop. The post used to run outside the socket's
 * mutex: thread A marked the task posted, its post failed (-ENOMEM), and before
 * A took its datagram back thread B queued one, saw a task marked posted, and
 * returned 0 - with no task to carry it until some later send. Here A's post
 * fails, and while it fails B sends. B's datagram must reach the peer without
 * any other send.
 *
 * conn_send: gev_conn_send from another thread whose post fails says
 * -ENOMEM (it said -ENOTCONN, as if the connection had closed), and the
 * connection goes on working. Then gev_conn_close from another thread,
 * which returns 0 once the state has changed: the loop must act on it
 * although a post would fail (it was a task, and the close was lost, the
 * connection left open with nothing to wake it). */
#include "fault.h"

#include <gev/gev.h>
#include <gev/broadcast.h>
#include <gev/client.h>
#include <gev/server.h>
#include <gev/udp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/time.h>
#include <unistd.h>

static gev_udp *sock;
static struct sockaddr_in peer;
static atomic_int release, held, b_go, b_done, b_rc;
static _Thread_local int in_a;

static uint64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls v until it is non-zero, within ms. */
static int wait_flag(atomic_int *v, int ms)
{
  for (uint64_t end = now_ms() + (uint64_t)ms; !atomic_load(v);)
    if (now_ms() >= end)
      return 0;
    else
      usleep(1000);
  return 1;
}

static void hold_task(void *arg)
{
  (void)arg;
  atomic_store(&held, 1);
  wait_flag(&release, 10000);
}

static void noop_task(void *arg)
{
  (void)arg;
}

static void on_datagram(gev_udp *u, const gev_udp_datagram *d)
{
  (void)u;
  (void)d;
}

static atomic_int udp_closed;

static void on_udp_close(gev_udp *u)
{
  (void)u;
  atomic_store(&udp_closed, 1);
}

static int send_text(const char *text)
{
  return gev_udp_send_to(sock, (struct sockaddr *)&peer, sizeof(peer), text,
                         strlen(text));
}

/* B sends when A's post is failing, and says when its call returned. */
static void *thread_b(void *arg)
{
  (void)arg;
  if (wait_flag(&b_go, 10000))
    atomic_store(&b_rc, send_text("B"));
  atomic_store(&b_done, 1);
  return NULL;
}

/* In A's failing realloc: B's send runs now (or waits for A, as it must;
 * the wait here is bounded, so either way A goes on). */
static void on_inject(fault_kind k)
{
  (void)k;
  if (!in_a)
    return;
  atomic_store(&b_go, 1);
  wait_flag(&b_done, 300);
}

static void *run_loop(void *l)
{
  gev_loop_run(l);
  return NULL;
}

/* The next datagram at fd within ms, as text; "" when none came. */
static void recv_text(int fd, char *out, size_t n, int ms)
{
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  ssize_t r;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  r = recv(fd, out, n - 1, 0);
  out[r > 0 ? r : 0] = '\0';
}

/* Holds l inside a task and fills its pending queue to its capacity,
 * found where a post grows it (a realloc; later ones double it): the next
 * post reallocs. 0, or -1 with a message. */
static int hold_full(gev_loop *l)
{
  int grew_at = 0, cap;

  atomic_store(&release, 0);
  atomic_store(&held, 0);
  gev_loop_post(l, hold_task, NULL);
  if (!wait_flag(&held, 5000)) {
    printf("posts: the loop did not run the holding task\n");
    return -1;
  }
  for (int n = 1; n < 4096 && !grew_at; n++) {
    uint64_t before = fault_hits(FK_REALLOC);
    if (gev_loop_post(l, noop_task, NULL) < 0) {
      printf("posts: post %d refused\n", n);
      return -1;
    }
    if (fault_hits(FK_REALLOC) > before && n > 1)
      grew_at = n;
  }
  if (!grew_at) {
    printf("posts: the task queue never grew\n");
    return -1;
  }
  cap = 2 * (grew_at - 1);
  for (int n = grew_at; n < cap; n++)
    gev_loop_post(l, noop_task, NULL);
  return 0;
}

/* The next post to l fails for want of memory: l held with a full queue,
 * the realloc that would grow it armed to fail. unstarve lets it go. */
static int starve(gev_loop *l)
{
  if (hold_full(l) < 0)
    return -1;
  fault_arm_nth(FK_REALLOC, 1);
  return 0;
}

static void unstarve(void)
{
  fault_disarm();
  atomic_store(&release, 1);
}

#define FAIL(...)                                                              \
  do {                                                                         \
    printf("posts: FAIL: " __VA_ARGS__);                                       \
    printf("\n");                                                              \
    return 1;                                                                  \
  } while (0)

static int udp_inbox(void)
{
  gev_udp_handler h = {.on_datagram = on_datagram, .on_close = on_udp_close};
  gev_udp_options o = {.address = "127.0.0.1:0"};
  socklen_t len = sizeof(peer);
  pthread_t lt, bt;
  gev_loop *l;
  char got[64];
  int fd, rc_a;

  fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  peer = (struct sockaddr_in){.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&peer, sizeof(peer)) < 0 ||
      getsockname(fd, (struct sockaddr *)&peer, &len) < 0)
    FAIL("peer socket: %s", strerror(errno));
  fault_arm_count();
  if (gev_loop_new(&l) < 0 || gev_udp_new(&sock, l, &h, &o) < 0)
    FAIL("loop or socket");
  pthread_create(&lt, NULL, run_loop, l);
  pthread_create(&bt, NULL, thread_b, NULL);
  if (send_text("probe") < 0)
    FAIL("probe send");
  recv_text(fd, got, sizeof(got), 5000);
  if (strcmp(got, "probe") != 0)
    FAIL("the probe did not arrive (got '%s')", got);
  if (hold_full(l) < 0)
    return 1;

  fault_set_hook(on_inject);
  fault_arm_nth(FK_REALLOC, 1);
  in_a = 1;
  rc_a = send_text("A");
  in_a = 0;
  fault_disarm();
  fault_set_hook(NULL);
  if (fault_injected() != 1 || rc_a != -ENOMEM)
    FAIL("udp_inbox: A's post was not the one failed (injected %llu, A %d)",
         (unsigned long long)fault_injected(), rc_a);
  atomic_store(&b_go, 1);
  pthread_join(bt, NULL);
  atomic_store(&release, 1);
  if (atomic_load(&b_rc) != 0)
    FAIL("udp_inbox: B's send returned %d", atomic_load(&b_rc));
  recv_text(fd, got, sizeof(got), 3000);
  if (strcmp(got, "B") != 0)
    FAIL("udp_inbox: B's datagram, accepted, was not sent (got '%s')", got);

  /* gev_udp_close from another thread, which cannot fail: the loop must
   * close the socket although a post would fail now. */
  if (starve(l) < 0)
    return 1;
  rc_a = gev_udp_close(sock);
  unstarve();
  if (rc_a != 0)
    FAIL("udp_close: returned %d", rc_a);
  if (!wait_flag(&udp_closed, 3000))
    FAIL("udp_close: on_close never ran (the close was lost)");
  gev_udp_free(sock);
  gev_loop_stop(l);
  pthread_join(lt, NULL);
  gev_loop_free(l);
  close(fd);
  printf("posts: udp_inbox ok (A refused with -ENOMEM, B delivered; a "
         "close carried)\n");
  return 0;
}

static gev_conn *_Atomic accepted;

static void keep_conn(gev_conn *c)
{
  gev_conn_ref(c);
  atomic_store(&accepted, c);
}

static void ignore_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)out;
  ringbuffer_retrieve_all(in);
}

static atomic_int visits_done;

static void visit_conn(gev_conn *c, void *arg)
{
  (void)c;
  (void)arg;
}

static void visit_done(void *arg)
{
  (void)arg;
  atomic_fetch_add(&visits_done, 1);
}

static void *run_server(void *s)
{
  gev_server_start(s);
  return NULL;
}

/* A server of one loop running h on its own thread, and a client
 * connected to it (3 s receive timeout) whose connection the server has
 * accepted (`accepted`). 0, or -1 with a message. */
static int serve_one(const char *name, const gev_handler *h, gev_server **s,
                     pthread_t *st, int *fd)
{
  gev_options o = {.address = "127.0.0.1:0", .num_loops = 1};
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {3, 0};

  atomic_store(&accepted, NULL);
  if (gev_server_new(s, h, &o) < 0) {
    printf("posts: FAIL: %s: server\n", name);
    return -1;
  }
  pthread_create(st, NULL, run_server, *s);
  a.sin_port = htons((uint16_t)gev_server_port(*s));
  *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (*fd < 0 || connect(*fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    printf("posts: FAIL: %s: connect: %s\n", name, strerror(errno));
    return -1;
  }
  for (int i = 0; i < 5000 && !atomic_load(&accepted); i++)
    usleep(1000);
  if (!atomic_load(&accepted)) {
    printf("posts: FAIL: %s: no connection\n", name);
    return -1;
  }
  return 0;
}

static int conn_send(void)
{
  gev_handler h = {keep_conn, ignore_message, NULL};
  gev_server *s;
  gev_conn *c;
  pthread_t st;
  char got[8] = {0};
  int fd, rc;

  fault_arm_count();
  if (serve_one("conn_send", &h, &s, &st, &fd) < 0)
    return 1;
  c = atomic_load(&accepted);
  if (starve(gev_conn_loop(c)) < 0)
    return 1;
  rc = gev_conn_send(c, "A", 1);
  unstarve();
  if (fault_injected() != 1 || rc != -ENOMEM)
    FAIL("conn_send: a failed post returned %d (injected %llu), not -ENOMEM",
         rc, (unsigned long long)fault_injected());
  if ((rc = gev_conn_send(c, "B", 1)) != 0)
    FAIL("conn_send: the send after it returned %d", rc);
  if (recv(fd, got, sizeof(got) - 1, 0) != 1 || got[0] != 'B')
    FAIL("conn_send: the client got '%s', not B", got);

  /* gev_conn_close from another thread changes the state at once and
   * returns 0; the loop must hear of it although a post would fail now. */
  if (starve(gev_conn_loop(c)) < 0)
    return 1;
  rc = gev_conn_close(c);
  unstarve();
  if (rc != 0)
    FAIL("conn_close: returned %d", rc);
  if ((rc = (int)recv(fd, got, sizeof(got) - 1, 0)) != 0)
    FAIL("conn_close: the client read %d (errno %d), not the close", rc,
         rc < 0 ? errno : 0);
  close(fd);

  /* gev_server_foreach_conn whose visit cannot be handed to the loop:
   * done still runs, so the call must not say -ENOMEM (which says nothing
   * will run: gev_server_broadcast then freed its message, which done had
   * freed already - a double free). */
  if (starve(gev_server_worker_loop(s, 0)) < 0)
    return 1;
  rc = gev_server_foreach_conn(s, visit_conn, NULL, visit_done);
  fault_disarm();
  if (rc != -ESHUTDOWN || atomic_load(&visits_done) != 1)
    FAIL("foreach: returned %d, done ran %d times (want -ESHUTDOWN, 1)", rc,
         atomic_load(&visits_done));
  fault_arm_nth(FK_REALLOC, 1);
  rc = gev_server_broadcast(s, "x", 1, NULL);
  unstarve();
  if (rc != -ESHUTDOWN)
    FAIL("broadcast: returned %d (want -ESHUTDOWN)", rc);
  gev_server_stop(s);
  pthread_join(st, NULL);
  gev_server_free(s);
  gev_conn_unref(c);
  printf("posts: conn_send ok (-ENOMEM, then served; a close carried; "
         "foreach and broadcast refused)\n");
  return 0;
}

/* udp_bound: while the loop moves the inbox into its send queue, sends
 * from other threads still count those bytes against send_queue_max (the
 * inbox was emptied before the queue's count was published, and another
 * thread could queue a second send_queue_max meanwhile). The loop is held
 * while the inbox fills to the bound; at a send (sendmmsg) of the move,
 * thread B sends as much as it can. First the inbox alone; then with a
 * batch of the loop's own ahead of it that the kernel pushes back
 * (EAGAIN), whose move to the queue publishes the queue's count halfway
 * (B then waits for the second sendmmsg). */
enum { BOUND = 16 * 1024, DGRAM = 1000 };
static gev_udp *bound_sock;
static atomic_int bound_go, bound_done, bound_taken, bound_hits, bound_at;

static void *bound_sender(void *arg)
{
  char d[DGRAM] = {0};

  (void)arg;
  if (wait_flag(&bound_go, 10000))
    for (int i = 0; i < 2 * BOUND / DGRAM &&
                    gev_udp_send_to(bound_sock, (struct sockaddr *)&peer,
                                    sizeof(peer), d, sizeof(d)) == 0;
         i++)
      atomic_fetch_add(&bound_taken, DGRAM);
  atomic_store(&bound_done, 1);
  return NULL;
}

static void at_sendmmsg(fault_kind k)
{
  if (k != FK_SENDMMSG || !gev_loop_in_thread(gev_udp_loop(bound_sock)) ||
      atomic_fetch_add(&bound_hits, 1) != atomic_load(&bound_at))
    return;
  fault_set_hit_hook(NULL);
  atomic_store(&bound_go, 1);
  wait_flag(&bound_done, 2000);
}

/* In the held loop's queue, after the hold: a datagram into u's batch. */
static void loop_batch_send(void *arg)
{
  (void)arg;
  send_text("batch");
}

static int udp_bound_case(bool pushed_back)
{
  gev_udp_handler h = {.on_datagram = on_datagram};
  gev_udp_options o = {.address = "127.0.0.1:0", .send_queue_max = BOUND};
  const char *name = pushed_back ? "udp_bound (pushed back)" : "udp_bound";
  char d[DGRAM] = {0};
  pthread_t lt, bt;
  gev_loop *l;
  int queued = 0;

  fault_arm_count();
  atomic_store(&bound_go, 0);
  atomic_store(&bound_done, 0);
  atomic_store(&bound_taken, 0);
  atomic_store(&bound_hits, 0);
  atomic_store(&bound_at, pushed_back ? 1 : 0);
  if (gev_loop_new(&l) < 0 || gev_udp_new(&bound_sock, l, &h, &o) < 0)
    FAIL("%s: loop or socket", name);
  sock = bound_sock; /* for send_text */
  pthread_create(&lt, NULL, run_loop, l);
  pthread_create(&bt, NULL, bound_sender, NULL);
  atomic_store(&release, 0);
  atomic_store(&held, 0);
  gev_loop_post(l, hold_task, NULL);
  if (!wait_flag(&held, 5000))
    FAIL("%s: the loop did not run the holding task", name);
  if (pushed_back)
    gev_loop_post(l, loop_batch_send, NULL);
  while (gev_udp_send_to(bound_sock, (struct sockaddr *)&peer, sizeof(peer), d,
                         sizeof(d)) == 0)
    queued += DGRAM;
  fault_sendmmsg_eagain(pushed_back);
  fault_set_hit_hook(at_sendmmsg);
  atomic_store(&release, 1);
  pthread_join(bt, NULL);
  fault_set_hit_hook(NULL);
  fault_sendmmsg_eagain(false);
  if (!atomic_load(&bound_go))
    FAIL("%s: the loop never sent (%llu sendmmsg)", name,
         (unsigned long long)fault_hits(FK_SENDMMSG));
  if (queued + atomic_load(&bound_taken) > BOUND)
    FAIL("%s: %d bytes accepted while the loop took %d (bound %d)", name,
         atomic_load(&bound_taken), queued, BOUND);
  gev_udp_free(bound_sock);
  gev_loop_stop(l);
  pthread_join(lt, NULL);
  gev_loop_free(l);
  printf("posts: %s ok (%d queued, %d more accepted meanwhile)\n", name, queued,
         atomic_load(&bound_taken));
  return 0;
}

static int udp_bound(void)
{
  return udp_bound_case(false) || udp_bound_case(true);
}

/* A listening socket of the test's own on 127.0.0.1 (its port in *port). */
static int listener(int *port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
      listen(fd, 8) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    return -1;
  *port = ntohs(a.sin_port);
  return fd;
}

/* The next connection on lfd within 3 s, with a receive timeout of 3 s. */
static int accept_within(int lfd)
{
  struct timeval tv = {3, 0};
  int fd;

  setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if ((fd = accept(lfd, NULL, NULL)) >= 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

static gev_handler quiet = {NULL, ignore_message, NULL};
static atomic_int connect_done, connect_err;
static gev_loop *resolve_loop;

static void on_result(gev_conn *c, int err, void *arg)
{
  (void)c;
  (void)arg;
  atomic_store(&connect_err, err);
  atomic_store(&connect_done, 1);
}

/* client_free: gev_client_free from another thread, which cannot fail,
 * must end the client's connection although a post would fail (it was a
 * task, and the client went on with its connection open). */
static int client_free(void)
{
  gev_client_options co = {.connect = {.on_result = on_result}};
  char addr[32], b;
  gev_client *cl;
  pthread_t lt;
  gev_loop *l;
  int lfd, fd, port, rc;

  if ((lfd = listener(&port)) < 0)
    FAIL("client_free: listener");
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  co.connect.address = addr;
  fault_arm_count();
  atomic_store(&connect_done, 0);
  if (gev_loop_new(&l) < 0 || gev_client_new(&cl, l, &quiet, &co) < 0)
    FAIL("client_free: loop or client");
  pthread_create(&lt, NULL, run_loop, l);
  if ((fd = accept_within(lfd)) < 0 || !wait_flag(&connect_done, 3000))
    FAIL("client_free: the client did not connect");
  if (starve(l) < 0)
    return 1;
  gev_client_free(cl);
  unstarve();
  if ((rc = (int)recv(fd, &b, 1, 0)) != 0)
    FAIL("client_free: the peer read %d (errno %d), not the close", rc,
         rc < 0 ? errno : 0);
  gev_loop_stop(l);
  pthread_join(lt, NULL);
  gev_loop_free(l);
  close(fd);
  close(lfd);
  printf("posts: client_free ok (its connection closed)\n");
  return 0;
}

/* In the resolver's thread, just before its getaddrinfo: the loop is held
 * with a full queue, so that the answer's post fails for want of memory;
 * the test lets the loop go on once it did. */
static void before_lookup(fault_kind k)
{
  if (k != FK_RESOLVE)
    return;
  fault_set_hit_hook(NULL);
  if (hold_full(resolve_loop) == 0)
    fault_arm_nth(FK_REALLOC, 1);
}

/* resolve_answer: a lookup's answer whose post fails for want of memory is
 * posted again (it was dropped, and a connect with no timeout waited for
 * ever). */
static int resolve_answer(void)
{
  gev_connect_options co = {.on_result = on_result};
  char addr[32];
  pthread_t lt;
  int lfd, fd, port;

  if ((lfd = listener(&port)) < 0)
    FAIL("resolve_answer: listener");
  snprintf(addr, sizeof(addr), "localhost:%d", port);
  co.address = addr;
  fault_arm_count();
  atomic_store(&connect_done, 0);
  atomic_store(&release, 0);
  if (gev_loop_new(&resolve_loop) < 0)
    FAIL("resolve_answer: loop");
  pthread_create(&lt, NULL, run_loop, resolve_loop);
  fault_set_hit_hook(before_lookup);
  if (gev_loop_connect(resolve_loop, &quiet, &co) < 0)
    FAIL("resolve_answer: connect");
  for (int i = 0; i < 5000 && fault_injected() == 0; i++)
    usleep(1000);
  fault_set_hit_hook(NULL);
  if (fault_injected() != 1)
    FAIL("resolve_answer: the answer's post was not failed");
  usleep(50 * 1000); /* the resolver tries again meanwhile */
  unstarve();
  if (!wait_flag(&connect_done, 3000))
    FAIL("resolve_answer: the connect never heard its lookup's answer");
  if (atomic_load(&connect_err) != 0)
    FAIL("resolve_answer: the connect failed: %d", atomic_load(&connect_err));
  if ((fd = accept_within(lfd)) < 0)
    FAIL("resolve_answer: no connection");
  close(fd);
  gev_loop_stop(resolve_loop);
  pthread_join(lt, NULL);
  gev_loop_free(resolve_loop);
  close(lfd);
  printf("posts: resolve_answer ok (posted again, connected)\n");
  return 0;
}

static atomic_int shutdowns_heard;

static void on_shutdown(gev_conn *c)
{
  atomic_fetch_add(&shutdowns_heard, 1);
  gev_conn_close(c);
}

/* server_shutdown: gev_server_shutdown's word to a worker whose queue
 * cannot grow still reaches it: its connections hear on_shutdown (the
 * failed post stopped the server at once, without it). */
static int server_shutdown(void)
{
  gev_handler h = {keep_conn, ignore_message, NULL};
  gev_server *s;
  pthread_t st;
  char b;
  int fd, rc;

  h.on_shutdown = on_shutdown;
  fault_arm_count();
  if (serve_one("server_shutdown", &h, &s, &st, &fd) < 0)
    return 1;
  /* The acceptor's timer heap has room for the shutdown's deadline, so
   * that the failed realloc is the post's alone. */
  for (int i = 0; i < 2; i++)
    if (!gev_loop_run_after(gev_server_loop(s), 600000, noop_task, NULL))
      FAIL("server_shutdown: timer");
  if (starve(gev_server_worker_loop(s, 0)) < 0)
    return 1;
  rc = gev_server_shutdown(s, 5000);
  usleep(100 * 1000); /* the acceptor begins the shutdown meanwhile */
  unstarve();
  if (rc != 0)
    FAIL("server_shutdown: returned %d", rc);
  if ((rc = (int)recv(fd, &b, 1, 0)) != 0)
    FAIL("server_shutdown: the client read %d, not the close", rc);
  pthread_join(st, NULL);
  if (atomic_load(&shutdowns_heard) != 1)
    FAIL("server_shutdown: on_shutdown ran %d times, not once (%llu "
         "faults injected)",
         atomic_load(&shutdowns_heard), (unsigned long long)fault_injected());
  close(fd);
  gev_server_free(s);
  gev_conn_unref(atomic_load(&accepted));
  printf("posts: server_shutdown ok (the worker drained)\n");
  return 0;
}

int main(void)
{
  return udp_inbox() || udp_bound() || conn_send() || client_free() ||
         resolve_answer() || server_shutdown();
}
