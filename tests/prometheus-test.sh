#!/usr/bin/env bash
# prometheus-test.sh HTTP_BIN
# A real Prometheus scrapes examples/http's GET /metrics: the example starts
# on a free port, Prometheus (Debian package prometheus) scrapes it every
# second from a port of its own, the test makes HTTP traffic and then asks
# Prometheus's HTTP API until it reports the target up and the bytes that
# traffic brought in. promtool checks a /metrics body too. Skips (77) only
# when prometheus, promtool or curl is missing; .ci/run installs them.
# Everything it starts is killed on every exit path; every wait is bounded.
set -u
http=$1
for b in prometheus promtool curl; do
  command -v "$b" >/dev/null || { echo "SKIP: $b not installed (Debian: prometheus, curl)"; exit 77; }
done
tmp=$(mktemp -d)
http_pid= prom_pid=
cleanup() {
  for p in $prom_pid $http_pid; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() {
  echo "FAIL [prometheus]: $*" >&2
  [ -s "$tmp/prom.log" ] && { echo "--- prometheus log (last lines):" >&2; tail -15 "$tmp/prom.log" >&2; }
  exit 1
}
get() { curl -s --max-time 5 "$@"; }

# The example, on a port the kernel picks.
"$http" -p 0 -l 2 >"$tmp/http.out" 2>"$tmp/http.err" &
http_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$tmp/http.out" 2>/dev/null && break
  sleep 0.05
done
line=$(head -1 "$tmp/http.out")
[[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "no listening line: '$line' $(cat "$tmp/http.err")"
port=${BASH_REMATCH[1]}
target=127.0.0.1:$port base=http://$target

# promtool accepts the exposition: it parses (status 1 if not) and its
# linter finds nothing (status 3 if it does: names, units, suffixes).
get "$base/metrics" >"$tmp/metrics" || fail "curl /metrics"
grep -q '^gev_bytes_read_total{loop="0"} ' "$tmp/metrics" || fail "/metrics: $(head -c 600 "$tmp/metrics")"
promtool check metrics <"$tmp/metrics" >"$tmp/lint" 2>&1 ||
  fail "promtool check metrics (status $?): $(cat "$tmp/lint")"

cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gev
    static_configs:
      - targets: ['$target']
EOF
promtool check config "$tmp/prometheus.yml" >"$tmp/config.check" 2>&1 || fail "promtool check config: $(cat "$tmp/config.check")"

# Prometheus on a free port: one below the ephemeral range (so no port-0
# bind of a parallel test takes it) that nothing listens on; if another
# process takes it first, Prometheus exits and the next port is tried.
prom=
for _ in $(seq 10); do
  p=$((20000 + RANDOM % 12000))
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # in use
  prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$p" >"$tmp/prom.log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 300); do # 30 s
    kill -0 "$prom_pid" 2>/dev/null || break
    [ "$(get "http://127.0.0.1:$p/-/ready" -o /dev/null -w '%{http_code}')" = 200 ] && { prom=http://127.0.0.1:$p; break; }
    sleep 0.1
  done
  [ -n "$prom" ] && kill -0 "$prom_pid" 2>/dev/null && break
  kill -9 "$prom_pid" 2>/dev/null; wait "$prom_pid" 2>/dev/null; prom_pid= prom=
  grep -q 'address already in use' "$tmp/prom.log" || fail "prometheus did not start"
done
[ -n "$prom" ] || fail "no free port for prometheus in 10 tries"

# Traffic: 20 requests of over 1000 bytes each, on new connections (so
# on both loops). Prometheus's own scrapes add to bytes_read, so the test
# waits for more than this traffic alone can explain.
pad=$(head -c 1000 /dev/zero | tr '\0' x)
for _ in $(seq 20); do
  [ "$(get -o /dev/null -w '%{http_code}' -H "X-Pad: $pad" "$base/")" = 200 ] || fail "traffic: request failed"
done
want=20000

# query EXPR: the value of the first sample of an instant query ('' if none)
query() {
  get -G "$prom/api/v1/query" --data-urlencode "query=$1" |
    sed -n 's/.*"value":\[[0-9.]*,"\([^"]*\)"\].*/\1/p'
}
up= bytes=
for _ in $(seq 60); do # 30 s
  up=$(query "up{job=\"gev\",instance=\"$target\"}")
  bytes=$(query "sum(gev_bytes_read_total{instance=\"$target\"})")
  [ "$up" = 1 ] && awk -v b="${bytes:-0}" -v w="$want" 'BEGIN { exit !(b + 0 >= w) }' && break
  sleep 0.5
done
[ "$up" = 1 ] || fail "target not up within 30 s (up='$up'): $(get -G "$prom/api/v1/targets" | head -c 800)"
awk -v b="${bytes:-0}" -v w="$want" 'BEGIN { exit !(b + 0 >= w) }' ||
  fail "sum(gev_bytes_read_total) = '$bytes' within 30 s, want >= $want"
echo "prometheus at $prom: up=$up, sum(gev_bytes_read_total)=$bytes"
echo "ok: prometheus"
