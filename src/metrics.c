/* metrics.c - a server's figures in the Prometheus text exposition format
 * (version 0.0.4): one series per loop, labelled loop="N" (the acceptor
 * loop "acceptor"), so that a scrape shows which loop carries the load. */
#include "server-internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct metric {
  const char *name, *type, *help;
  size_t offset; /* of the uint64_t in gev_stats */
} metric;

#define M(n, t, h, f)                                                          \
  {                                                                            \
    "gev_" n, t, h, offsetof(gev_stats, f)                                     \
  }

static const metric metrics[] = {
    M("connections_open", "gauge", "Connections open now.", conns_open),
    M("connections_accepted_total", "counter", "Connections accepted.",
      conns_accepted),
    M("connections_closed_total", "counter", "Connections closed.",
      conns_closed),
    M("connections_refused_total", "counter",
      "Connections refused by max_connections.", conns_refused),
    M("bytes_read_total", "counter", "Bytes read from connections.",
      bytes_read),
    M("bytes_written_total", "counter", "Bytes written to connections.",
      bytes_written),
    M("messages_total", "counter", "on_message calls.", messages),
    M("loop_passes_total", "counter", "Event loop passes.", loop_passes),
    M("closed_idle_total", "counter", "Connections closed by the idle timeout.",
      closed_idle),
    M("closed_error_total", "counter",
      "Connections closed by a reset, a socket error or no memory.",
      closed_error),
    M("closed_cap_total", "counter",
      "Connections closed for input beyond max_buffer.", closed_cap),
    M("handshake_failures_total", "counter", "Failed transport handshakes.",
      handshake_failures),
    M("tasks_pending", "gauge", "Tasks queued for the loop now.",
      tasks_pending),
    M("timers_pending", "gauge", "Timers armed now.", timers_pending),
    M("cross_thread_sends_total", "counter",
      "gev_conn_send calls from other threads.", cross_thread_sends),
    M("backpressure_pauses_total", "counter",
      "Times reading paused for a full output.", backpressure_pauses),
    M("loop_busy_seconds_total", "counter", "CPU time of the loop thread.",
      busy_us),
    M("loop_lag_seconds", "gauge",
      "Worst timer lateness in the last one to two seconds.", lag_max_ms),
    M("datagrams_received_total", "counter",
      "Datagrams received by UDP sockets.", datagrams_in),
    M("datagrams_sent_total", "counter",
      "Datagrams taken by the kernel from UDP sockets.", datagrams_out),
    M("datagram_bytes_received_total", "counter",
      "Payload bytes of the datagrams received.", datagram_bytes_in),
    M("datagram_bytes_sent_total", "counter",
      "Payload bytes of the datagrams sent.", datagram_bytes_out),
    M("datagrams_dropped_total", "counter",
      "Datagrams accepted for sending that a closing socket dropped.",
      datagrams_dropped),
    M("datagrams_truncated_total", "counter", "Datagrams received cut short.",
      datagrams_truncated),
};

typedef struct out {
  char *buf;
  size_t len, at; /* at may pass len: the length needed */
} out;

static void put(out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...)
{
  va_list ap;
  size_t room = o->at < o->len ? o->len - o->at : 0;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(room ? o->buf + o->at : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    o->at += (size_t)n;
}

static void series(out *o, const metric *m, const char *loop,
                   const gev_stats *st)
{
  uint64_t v = *(const uint64_t *)(const void *)((const char *)st + m->offset);

  if (m->offset == offsetof(gev_stats, busy_us)) /* seconds, as us */
    put(o, "%s{loop=\"%s\"} %llu.%06llu\n", m->name, loop,
        (unsigned long long)(v / 1000000), (unsigned long long)(v % 1000000));
  else if (m->offset == offsetof(gev_stats, lag_max_ms)) /* seconds, as ms */
    put(o, "%s{loop=\"%s\"} %llu.%03llu\n", m->name, loop,
        (unsigned long long)(v / 1000), (unsigned long long)(v % 1000));
  else
    put(o, "%s{loop=\"%s\"} %llu\n", m->name, loop, (unsigned long long)v);
}

/* Every loop's figures are read once, before any is written, so that all
 * the series of one scrape come from the same snapshots. */
int gev_server_metrics(const gev_server *s, char *buf, size_t len)
{
  size_t nm = sizeof(metrics) / sizeof(metrics[0]);
  out o = {buf, len, 0};
  gev_stats *all;

  if (!s || (!buf && len))
    return -EINVAL;
  if (!(all = calloc((size_t)s->nloops + 1, sizeof(*all))))
    return -ENOMEM;
  gev_loop_stats(s->acceptor, &all[0]);
  for (int i = 0; i < s->nloops; i++)
    gev_loop_stats(s->workers[i].loop, &all[i + 1]);
  for (size_t k = 0; k < nm; k++) {
    put(&o, "# HELP %s %s\n# TYPE %s %s\n", metrics[k].name, metrics[k].help,
        metrics[k].name, metrics[k].type);
    series(&o, &metrics[k], "acceptor", &all[0]);
    for (int i = 0; i < s->nloops; i++) {
      char name[16];
      snprintf(name, sizeof(name), "%d", i);
      series(&o, &metrics[k], name, &all[i + 1]);
    }
  }
  free(all);
  if (o.at > INT32_MAX)
    return -EOVERFLOW;
  return (int)o.at;
}
