#!/usr/bin/env bash
# example-test.sh EXAMPLE BIN_DIR ECHO_CLIENT
# Starts an example server on a free port, talks to it over loopback with
# bash's /dev/tcp (and the echo load client), then stops it with SIGINT and
# checks that it exits 0. Every wait is bounded.
set -u
name=$1 bin=$2/$1 client=$3
tmp=$(mktemp -d)
pid=
fail() {
  echo "FAIL [$name]: $*" >&2
  for p in $pid ${upid:-}; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
  exit 1
}

start() {
  # The redirection truncates in the child, asynchronously: remove the file
  # first, or the wait below could see an earlier server's line.
  rm -f "$tmp/out"
  "$bin" -p 0 -l 2 "$@" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 100); do
    grep -q '^listening on ' "$tmp/out" 2>/dev/null && break
    sleep 0.05
  done
  line=$(head -1 "$tmp/out")
  [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "no listening line: '$line' $(cat "$tmp/err")"
  port=${BASH_REMATCH[1]}
}

# upstream NAME ARGS...: starts another example as an upstream; sets upid
# and upport. Killed on failure like the main server.
upid=
upstream() {
  local n=$1; shift
  rm -f "$tmp/up.out" # see start()
  "$(dirname "$bin")/$n" -p 0 "$@" >"$tmp/up.out" 2>&1 &
  upid=$!
  for _ in $(seq 100); do
    grep -q '^listening on ' "$tmp/up.out" 2>/dev/null && break
    sleep 0.05
  done
  [[ $(head -1 "$tmp/up.out") =~ :([0-9]+)$ ]] || fail "upstream $n did not start"
  upport=${BASH_REMATCH[1]}
}

# stop [SIGNAL]: SIGINT by default; the server must exit 0 within 10 s.
stop() {
  local sig=${1:-INT}
  kill -"$sig" "$pid"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "did not exit within 10 s of SIG$sig"
  wait "$pid"; st=$?
  [ "$st" -eq 0 ] || fail "exit status $st after SIG$sig"
  pid=
}

# exits_within SECONDS: the server (already signalled) exits 0 within
# that many seconds
exits_within() {
  for _ in $(seq $(($1 * 20))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "still running $1 s into its shutdown"
  wait "$pid"; st=$?
  [ "$st" -eq 0 ] || fail "exit status $st after its shutdown"
  pid=
}

# read_response FD: one keep-alive response (head, then a 13-byte body)
read_response() {
  local l
  while IFS= read -r -t 5 l <&"$1"; do l=${l%$'\r'}; [ -z "$l" ] && break; done
  read -r -t 5 -N 13 body <&"$1" || fail "no response body on fd $1"
}

# drain_request_test [close]: with the server at $port started with a
# long --drain-ms, a request whose head is cut in two by SIGTERM is still
# answered (with "Connection: close" when asked: the HTTP server's own
# drain), then EOF; a keep-alive connection idle at the signal is closed;
# the server exits 0 long before the bound.
drain_request_test() {
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3
  read_response 3
  [ "$body" = "Hello, World!" ] || fail "before the drain: '$body'"
  exec 4<>/dev/tcp/127.0.0.1/"$port"
  printf 'GET /plaintext HTTP/1.1\r\nHost: x\r\n' >&4
  sleep 0.3
  kill -TERM "$pid"
  # The listener closes first: once a connect is refused the drain has
  # begun; the workers hear of it right after.
  for _ in $(seq 100); do
    (exec 9<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null || break
    sleep 0.05
  done
  sleep 0.1
  printf 'User-Agent: late\r\n\r\n' >&4 || fail "closed before the request was complete"
  timeout 5 cat <&4 >"$tmp/raw" || fail "no EOF after the request that came during the drain"
  exec 4<&-
  [ "$(count 'HTTP/1.1 200 OK')" -eq 1 ] && [ "$(count 'Hello, World!')" -eq 1 ] ||
    fail "request during the drain: '$(cat "$tmp/raw")'"
  if [ "${1:-}" = close ]; then
    [ "$(count 'Connection: close')" -eq 1 ] || fail "no 'Connection: close' during the drain: '$(cat "$tmp/raw")'"
  fi
  timeout 5 cat <&3 >"$tmp/idle" || fail "the idle keep-alive connection was not closed"
  [ ! -s "$tmp/idle" ] || fail "the idle connection got '$(cat "$tmp/idle")'"
  exec 3<&-
  exits_within 5
}

# read_line FD: one line within 5 s into $line, or fail
read_line() { IFS= read -r -t 5 line <&"$1" || fail "no line on fd $1"; }

# need PROG...: skip (exit 77, meson's skip code) when a client is missing
need() {
  for b; do
    command -v "$b" >/dev/null || { echo "SKIP: $b not installed"; rm -rf "$tmp"; exit 77; }
  done
}

# exchange REQUEST: sends REQUEST (printf %b escapes) on a new connection
# and reads until the server closes it, within 5 s, into $tmp/raw.
exchange() {
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf '%b' "$1" >&3 || fail "server closed before reading '${1:0:60}'"
  timeout 5 cat <&3 >"$tmp/raw"; local st=$?
  exec 3<&-
  [ "$st" -eq 0 ] || fail "no EOF after sending '${1:0:60}'"
}

# count REGEX: matches in $tmp/raw (CRs removed; a response body without a
# newline runs into the next status line, so matches, not lines)
count() { tr -d '\r' <"$tmp/raw" | grep -oE "$1" | wc -l; }

case $name in
echo)
  start
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf 'hello gev\n' >&3
  read_line 3
  [ "$line" = "hello gev" ] || fail "echoed '$line'"
  exec 3<&-
  "$client" -p "$port" -c 20 -P 4 -s 1000 -n 200 -d 30 >"$tmp/client" || fail "echo-client: $(cat "$tmp/client")"
  grep -qE '^conns=20 .* p50_us=[0-9]+ p99_us=[0-9]+ verify_errors=0 failed_conns=0 p999_us=[0-9]+ max_us=[1-9][0-9]*$' "$tmp/client" ||
    fail "echo-client's line: $(cat "$tmp/client")"
  # SIGUSR1: one stats line on stderr, and the server goes on. 21
  # connections (the one above and the client's 20) carried 10 + 20 x 200 x
  # 1000 bytes each way.
  kill -USR1 "$pid"
  for _ in $(seq 100); do grep -q '^stats: ' "$tmp/err" && break; sleep 0.05; done
  sl=$(grep '^stats: ' "$tmp/err" | head -1)
  [[ $sl =~ ^stats:\ connections\ open=[0-9]+\ accepted=21\ closed=[0-9]+\ bytes\ in=4000010\ out=4000010\ messages=[1-9][0-9]*\ passes=[1-9][0-9]*\ lag_ms=[0-9]+$ ]] ||
    fail "stats line after SIGUSR1: '$sl' $(cat "$tmp/err")"
  kill -0 "$pid" 2>/dev/null || fail "SIGUSR1 stopped the server"
  stop TERM
  # Graceful shutdown: an idle connection is closed at once, long before
  # the drain's 60 s bound, and the server exits 0.
  start --drain-ms 60000
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf 'before\n' >&3; read_line 3; [ "$line" = before ] || fail "echoed '$line'"
  t0=$SECONDS
  stop TERM
  [ $((SECONDS - t0)) -lt 5 ] || fail "an idle connection held the drain"
  IFS= read -r -t 5 line <&3 && fail "read '$line' after the shutdown"
  exec 3<&-
  # A connection with output still queued (its peer does not read) keeps
  # the drain going; a second signal stops at once.
  start --drain-ms 60000
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  head -c 16000000 /dev/zero >&3 & wpid=$!
  # Until the writer is done or blocked (16 MB is more than loopback's
  # socket buffers hold, so the rest is queued in the server): a fixed
  # sleep was too short on a loaded machine, when nothing was queued yet.
  last=-1
  for _ in $(seq 100); do
    w=$(awk '/^wchar/ {print $2}' "/proc/$wpid/io" 2>/dev/null) || break
    [ -z "$w" ] && break
    [ "$w" = "$last" ] && break
    last=$w; sleep 0.2
  done
  kill -TERM "$pid"; sleep 0.5
  kill -0 "$pid" 2>/dev/null || fail "exited with output still queued"
  stop TERM
  kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null
  exec 3<&-
  ;;
push)
  start -i 50
  exec 3<>/dev/tcp/127.0.0.1/"$port" 4<>/dev/tcp/127.0.0.1/"$port"
  for fd in 3 4; do
    read_line $fd; [[ $line =~ ^tick\ ([0-9]+)$ ]] || fail "bad push '$line'"; a=${BASH_REMATCH[1]}
    read_line $fd; [[ $line =~ ^tick\ ([0-9]+)$ ]] || fail "bad push '$line'"; b=${BASH_REMATCH[1]}
    [ "$b" -gt "$a" ] || fail "ticks not increasing: $a then $b"
  done
  exec 3<&- 4<&-
  stop
  ;;
maxconn)
  start -m 2
  exec 3<>/dev/tcp/127.0.0.1/"$port"; read_line 3; [[ $line == welcome:* ]] || fail "client 1 got '$line'"
  exec 4<>/dev/tcp/127.0.0.1/"$port"; read_line 4; [[ $line == welcome:* ]] || fail "client 2 got '$line'"
  exec 5<>/dev/tcp/127.0.0.1/"$port"
  if IFS= read -r -t 5 line <&5; then fail "client 3 past the limit got '$line'"; fi
  exec 5<&-
  printf 'still here\n' >&3; read_line 3; [ "$line" = "still here" ] || fail "client 1 echo '$line'"
  exec 3<&-
  ok=
  for _ in $(seq 50); do   # the slot frees once on_close has run
    exec 5<>/dev/tcp/127.0.0.1/"$port"
    if IFS= read -r -t 1 line <&5 && [[ $line == welcome:* ]]; then ok=1; exec 5<&-; break; fi
    exec 5<&-
    sleep 0.1
  done
  [ -n "$ok" ] || fail "no slot freed after a client left"
  exec 4<&-
  stop
  ;;
http)
  need curl wrk
  trap '' PIPE       # a send to a reset connection fails instead of killing us
  start
  base=http://127.0.0.1:$port
  # keep-alive: two URLs over one connection
  timeout 10 curl -s -v "$base/" "$base/plaintext" >"$tmp/body" 2>"$tmp/curl" || fail "curl: $(cat "$tmp/curl")"
  [ "$(cat "$tmp/body")" = "Hello, World!Hello, World!" ] || fail "bodies: '$(cat "$tmp/body")'"
  grep -q 'Re-using existing connection' "$tmp/curl" || fail "connection not reused: $(cat "$tmp/curl")"
  tr -d '\r' <"$tmp/curl" >"$tmp/hdrs"
  for h in 'HTTP/1.1 200 OK' 'Server: gev' 'Content-Type: text/plain' 'Content-Length: 13' \
           'Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT'; do
    [ "$(grep -cE "^< $h\$" "$tmp/hdrs")" -eq 2 ] || fail "header '$h' not in both responses: $(cat "$tmp/hdrs")"
  done
  # the Date header follows the clock: two requests 1.2 s apart on one
  # keep-alive connection (so one worker loop) each carry the current second
  exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "connect for Date"
  for i in 1 2; do
    [ "$i" = 2 ] && sleep 1.2
    t0=$(date -u +%s)
    printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3
    d=
    while IFS= read -r -t 5 l <&3; do
      l=${l%$'\r'}
      [ -z "$l" ] && break
      [[ $l == Date:* ]] && d=${l#Date: }
    done
    read -r -t 5 -N 13 body <&3 || fail "Date request $i: no body"
    t1=$(date -u +%s)
    t=$(date -u -d "$d" +%s) || fail "Date unparsable: '$d'"
    # t0 - 1: the server's time() reads the kernel's per-tick seconds,
    # which may still show the previous second just after date's clock
    # turned over
    [ "$t" -ge $((t0 - 1)) ] && [ "$t" -le "$t1" ] || fail "Date '$d' outside [$((t0 - 1)), $t1] (request $i)"
  done
  exec 3<&-
  [ "$(timeout 10 curl -s -o /dev/null -w '%{http_code}' "$base/nope")" = 404 ] || fail "no 404 for /nope"
  # /metrics: the server's figures in the Prometheus text format, a series
  # per loop; this connection's own loop has read its request
  timeout 10 curl -s -D "$tmp/mhdr" "$base/metrics" >"$tmp/metrics" || fail "curl /metrics"
  tr -d '\r' <"$tmp/mhdr" | grep -qx 'Content-Type: text/plain; version=0.0.4' || fail "/metrics head: $(cat "$tmp/mhdr")"
  grep -qE '^gev_connections_open\{loop="[0-9]+"\} [0-9]+$' "$tmp/metrics" &&
    grep -qE '^gev_bytes_read_total\{loop="[0-9]+"\} [1-9][0-9]*$' "$tmp/metrics" || fail "/metrics: $(head -c 800 "$tmp/metrics")"
  # malformed request, oversized head, chunked body: answered, then closed
  exchange 'GARBAGE\r\n\r\n'
  [ "$(count 'HTTP/1.1 400 Bad Request')" -eq 1 ] || fail "malformed request: $(cat "$tmp/raw")"
  exchange "GET / HTTP/1.1\r\nHost: x\r\nX-Big: $(head -c 9000 /dev/zero | tr '\0' a)\r\n\r\n"
  [ "$(count 'HTTP/1.1 431 ')" -eq 1 ] || fail "oversized head: $(cat "$tmp/raw")"
  exchange 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'
  [ "$(count 'HTTP/1.1 501 ')" -eq 1 ] || fail "chunked body: $(cat "$tmp/raw")"
  # two pipelined requests in one write: two responses, then close
  exchange 'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
  [ "$(count 'HTTP/1.1 200 OK')" -eq 2 ] && [ "$(count 'Hello, World!')" -eq 2 ] ||
    fail "pipelined: $(cat "$tmp/raw")"
  # a body (skipped) followed by a pipelined request; HTTP/1.0 closes
  exchange 'POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n'
  [ "$(count 'HTTP/1.1 (404 Not Found|200 OK)')" -eq 2 ] || fail "body then request: $(cat "$tmp/raw")"
  # a body that arrives after its head
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234' >&3
  sleep 0.2
  printf '56789GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  timeout 5 cat <&3 >"$tmp/raw" || fail "no EOF after a late body"
  exec 3<&-
  [ "$(count 'HTTP/1.1 (405 Method Not Allowed|200 OK)')" -eq 2 ] || fail "late body: $(cat "$tmp/raw")"
  # load: many connections, then few; no errors, only 2xx
  for c in 50 2; do
    timeout 30 wrk -t1 -c$c -d2s --timeout 10s "$base/" >"$tmp/wrk" 2>&1 || fail "wrk -c$c: $(cat "$tmp/wrk")"
    grep -qE '^ +[1-9][0-9]* requests in' "$tmp/wrk" || fail "wrk -c$c made no requests: $(cat "$tmp/wrk")"
    grep -qE 'Non-2xx|Socket errors' "$tmp/wrk" && fail "wrk -c$c: $(cat "$tmp/wrk")"
    echo "wrk -c$c: $(grep -E 'Requests/sec' "$tmp/wrk")"
  done
  stop
  start --drain-ms 60000
  drain_request_test close
  ;;
redis)
  need redis-cli redis-benchmark
  start
  expect() { # expect WANT ARGS...: redis-cli ARGS prints WANT
    local want=$1 got; shift
    got=$(timeout 10 redis-cli -p "$port" "$@" 2>&1)
    [ "$got" = "$want" ] || fail "redis-cli $*: got '$got', want '$want'"
  }
  expect PONG ping
  expect hello ping hello
  expect 'a b' echo 'a b'
  expect OK set k1 v1
  expect v1 get k1
  expect '' get nope
  expect OK set n 10
  expect 11 incr n
  expect 10 decr n
  expect 15 incrby n 5
  expect -5 decrby n 20
  expect OK set s abc
  expect 'ERR value is not an integer or out of range' incr s
  expect OK set max 9223372036854775807
  expect 'ERR increment or decrement would overflow' incr max
  expect 2 exists k1 n nope
  expect 1 del k1 nope
  expect 0 exists k1
  expect OK set t v ex 100
  [[ $(timeout 10 redis-cli -p "$port" ttl t) =~ ^(99|100)$ ]] || fail "ttl t"
  expect -1 ttl n
  expect -2 ttl nope
  expect 1 expire n 50
  expect 0 expire nope 50
  expect OK set p v px 200
  sleep 0.4
  expect '' get p
  expect -2 ttl p
  expect OK set x y nx
  expect '' set x z nx
  expect y get x
  expect '' set q v xx
  expect OK flushall
  for k in key:1 key:2 key:10 other; do expect OK set "$k" v; done
  [ "$(timeout 10 redis-cli -p "$port" keys 'key:?' | sort | tr '\n' ' ')" = 'key:1 key:2 ' ] || fail "keys key:?"
  [ "$(timeout 10 redis-cli -p "$port" keys 'key:*' | wc -l)" -eq 3 ] || fail "keys key:*"
  [ "$(timeout 10 redis-cli -p "$port" keys '*' | wc -l)" -eq 4 ] || fail "keys *"
  expect 4 dbsize
  expect "ERR wrong number of arguments for 'get' command" get
  expect "ERR unknown command 'foo', with args beginning with: 'bar' " foo bar
  # inline commands and pipelining; QUIT answers, then closes
  exchange 'PING\r\nECHO hi\r\n*3\r\n$3\r\nSET\r\n$1\r\nz\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nz\r\nQUIT\r\nPING\r\n'
  [ "$(tr -d '\r' <"$tmp/raw" | tr '\n' ' ')" = '+PONG $2 hi +OK :2 +OK ' ] || fail "pipeline: '$(cat "$tmp/raw")'"
  # protocol errors and limits: an error, then closed
  exchange '*abc\r\nPING\r\n'
  [ "$(count '^-ERR Protocol error: invalid multibulk length$')" -eq 1 ] || fail "bad multibulk: $(cat "$tmp/raw")"
  exchange '*1048577\r\n'
  [ "$(count '^-ERR Protocol error: invalid multibulk length$')" -eq 1 ] || fail "too many args: $(cat "$tmp/raw")"
  exchange '*1\r\n$536870913\r\n'
  [ "$(count '^-ERR Protocol error: invalid bulk length$')" -eq 1 ] || fail "bulk too big: $(cat "$tmp/raw")"
  exchange '*1\r\n+PING\r\n'
  [ "$(count "^-ERR Protocol error: expected '\\\$', got '\\+'$")" -eq 1 ] || fail "no bulk: $(cat "$tmp/raw")"
  timeout 60 redis-benchmark -p "$port" -t ping,set,get -P 16 -q -n 20000 >"$tmp/bench" 2>&1 ||
    fail "redis-benchmark: $(cat "$tmp/bench")"
  tr '\r' '\n' <"$tmp/bench" | grep -v 'rps=' | grep . >"$tmp/bench2"
  for t in PING_INLINE PING_MBULK SET GET; do
    grep -qE "^ *$t: [0-9.]+ requests per second" "$tmp/bench2" || fail "redis-benchmark, no $t: $(cat "$tmp/bench2")"
  done
  grep -qiE 'error|warning' "$tmp/bench2" && fail "redis-benchmark: $(cat "$tmp/bench2")"
  cat "$tmp/bench2"
  stop
  ;;
framing)
  fc=$2/framing-client
  start -m 65536
  "$fc" -p "$port" -c 8 -n 500 -s 65536 -t 30 >"$tmp/fc" 2>&1 || fail "framing-client: $(cat "$tmp/fc")"
  cat "$tmp/fc"
  exec 4<>/dev/tcp/127.0.0.1/"$port"                  # opened before the bad client
  "$fc" -p "$port" -c 4 -n 2000 -s 65536 -S 7 -t 30 >"$tmp/fc2" 2>&1 &
  fcpid=$!
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf '\x00\x01\x00\x01' >&3                       # 65537 bytes: over the maximum
  timeout 5 cat <&3 >"$tmp/raw" || fail "oversized frame: connection not closed"
  [ -s "$tmp/raw" ] && fail "oversized frame got a reply"
  exec 3<&-
  printf '\x00\x00\x00\x05hello' >&4
  [ "$(timeout 5 head -c 9 <&4 | tail -c 5)" = olleh ] || fail "client opened before the bad one"
  printf '\x00\x00' >&4; sleep 0.1; printf '\x00\x03a' >&4; sleep 0.1; printf 'bc' >&4   # split header
  [ "$(timeout 5 head -c 7 <&4 | tail -c 3)" = cba ] || fail "frame sent in pieces"
  { printf '\x00\x01\x00\x00'; head -c 65536 /dev/zero; } >&4           # exactly the maximum
  [ "$(timeout 5 head -c 65540 <&4 | wc -c)" -eq 65540 ] || fail "frame of the maximum size"
  exec 4<&-
  wait "$fcpid" || fail "framing-client during the bad one: $(cat "$tmp/fc2")"
  stop
  ;;
timer)
  start -i 100 -k 1000 -b 100
  # an idle client: pings 1, 2, 3... then the goodbye, then EOF, and not
  # before the idle time (a count of pings would depend on the machine:
  # run_every skips the runs a stalled loop missed)
  t_conn=${EPOCHREALTIME/./}
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  n=0
  while read_line 3 && [ "$line" != "goodbye: idle" ]; do
    [ "$line" = "ping $((n + 1))" ] || fail "idle client got '$line' after ping $n"
    n=$((n + 1))
    [ "$n" -lt 50 ] || fail "no goodbye after $n pings"
  done
  waited=$(((${EPOCHREALTIME/./} - t_conn) / 1000))
  [ "$waited" -ge 990 ] || fail "kicked as idle after $waited ms, before 1000"
  [ "$n" -ge 1 ] && [ "$n" -le 12 ] || fail "$n pings within the 1000 ms idle time"
  IFS= read -r -t 5 line <&3; st=$?
  [ "$st" -eq 1 ] || fail "no EOF after the goodbye (read status $st, '$line')"
  exec 3<&-
  # a client that keeps talking is echoed, pinged and not kicked: it
  # speaks every 100 ms, a tenth of the idle time (a margin for a loaded
  # machine: with 150 ms against 600 ms a stalled run once got kicked)
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  for i in $(seq 15); do                 # 15 x 100 ms: longer than the idle time
    printf 'hi %s\n' "$i" >&3
    while read_line 3 && [ "$line" != "hi $i" ]; do
      [[ $line == ping* ]] || fail "active client got '$line'"
    done
    sleep 0.1
  done
  exec 3<&-
  # clients that leave early: their timers must be cancelled in on_close
  for i in $(seq 20); do exec 3<>/dev/tcp/127.0.0.1/"$port"; exec 3<&-; done
  exec 3<>/dev/tcp/127.0.0.1/"$port"; read_line 3; exec 3<&-
  sleep 1.2                              # past the pings and the idle kick
  exec 3<>/dev/tcp/127.0.0.1/"$port"; read_line 3
  [ "$line" = "ping 1" ] || fail "new client after early leavers got '$line'"
  exec 3<&-
  [ "$(grep -cE '^heartbeat [0-9]+: [0-9]+ clients$' "$tmp/out")" -ge 5 ] || fail "heartbeats: $(cat "$tmp/out")"
  stop
  ;;
proxy)
  # Through the proxy to the echo example, every byte verified: many small
  # messages, then 1 MB messages that exercise the backpressure path.
  upstream echo
  start -u "127.0.0.1:$upport"
  "$client" -p "$port" -c 20 -P 4 -s 3000 -n 300 -d 30 >"$tmp/client" ||
    fail "echo-client via proxy: $(cat "$tmp/client")"
  "$client" -p "$port" -c 2 -P 3 -s 1000000 -n 12 -d 60 >"$tmp/client" ||
    fail "1 MB messages via proxy: $(cat "$tmp/client")"
  # Half-close: the client's FIN reaches the upstream only after its bytes,
  # and the upstream's answer (the echo, sent before the echo server closes
  # on that FIN) still reaches the client, followed by EOF.
  msg="half-closed $(seq 2000 | tr '\n' ' ')"
  "$(dirname "$bin")/half-close" "$port" "$msg" >"$tmp/hc" 2>&1 ||
    fail "half-close via proxy: $(head -c 300 "$tmp/hc")"
  [ "$(cat "$tmp/hc")" = "$msg" ] || fail "half-close via proxy got $(wc -c <"$tmp/hc") bytes: $(head -c 100 "$tmp/hc")"
  stop
  kill -INT "$upid"; wait "$upid"; upid=
  # Closes propagate. maxconn -m 1 as the upstream serves one connection at
  # a time, so a second client gets served only if the first client's
  # upstream connection was closed when that client left.
  upstream maxconn -m 1
  start -u "127.0.0.1:$upport"
  exec 3<>/dev/tcp/127.0.0.1/"$port"; read_line 3
  [[ $line == welcome:* ]] || fail "first client got '$line'"
  exec 3<&-
  ok=
  for _ in $(seq 50); do
    exec 4<>/dev/tcp/127.0.0.1/"$port"
    if IFS= read -r -t 1 line <&4 && [[ $line == welcome:* ]]; then ok=1; break; fi
    exec 4<&-
    sleep 0.1
  done
  [ -n "$ok" ] || fail "the upstream of a client that left was not closed"
  # The other way round: the upstream goes away, the client is closed.
  kill -INT "$upid"; wait "$upid"; upid=
  IFS= read -r -t 5 line <&4; st=$?
  [ "$st" -eq 1 ] || fail "client not closed after its upstream closed (read status $st)"
  exec 4<&-
  # An upstream that refuses: the client is closed, the proxy lives on.
  exec 5<>/dev/tcp/127.0.0.1/"$port"
  IFS= read -r -t 5 line <&5; st=$?
  [ "$st" -eq 1 ] || fail "client not closed when the upstream refused (read status $st)"
  exec 5<&-
  grep -q 'Connection refused' "$tmp/err" || fail "no refusal reported: $(cat "$tmp/err")"
  stop
  # Graceful shutdown drains both ends of a pair: an HTTP request cut in
  # two by SIGTERM still goes through to the upstream and its answer comes
  # back, then both ends close; an idle pair closes by itself.
  trap '' PIPE
  upstream http
  start -u "127.0.0.1:$upport" --drain-ms 60000
  drain_request_test
  kill -INT "$upid"; wait "$upid"; upid=
  ;;
websocket)
  # The page, /echo, /chat's broadcast and pushes (tests/ws/ for more),
  # the message limit, and the shutdown's Close 1001.
  wsc=$(dirname "$bin")/ws-client
  start -m 1000 -i 100
  exchange 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
  grep -q '^HTTP/1.1 200 OK' "$tmp/raw" && grep -q "new WebSocket('ws://' + location.host + '/chat')" "$tmp/raw" ||
    fail "GET / did not serve the chat page: $(head -c 300 "$tmp/raw")"
  printf 'hello\n\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\n' | "$wsc" "ws://127.0.0.1:$port/echo" >"$tmp/c1" || fail "ws-client /echo: $(cat "$tmp/c1")"
  [ "$(cat "$tmp/c1")" = "$(printf 'hello\n\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\nclosed 1000')" ] || fail "/echo gave: $(cat "$tmp/c1")"
  printf 'bin\n' | "$wsc" -b "ws://127.0.0.1:$port/echo" >"$tmp/c1" && grep -qx 'binary 3' "$tmp/c1" || fail "binary echo: $(cat "$tmp/c1")"
  head -c 1001 /dev/zero | tr '\0' a | "$wsc" "ws://127.0.0.1:$port/echo" >"$tmp/c1"
  grep -qx 'closed 1009 message too big' "$tmp/c1" || fail "-m 1000 let 1001 bytes through: $(cat "$tmp/c1")"
  # A listener on /chat sees another client's message and the pushes.
  : | "$wsc" -n 10 "ws://127.0.0.1:$port/chat" >"$tmp/c2" & lpid=$!
  sleep 0.3
  printf 'hi from b\n' | "$wsc" -n 1 "ws://127.0.0.1:$port/chat" >"$tmp/c3" || fail "chat sender: $(cat "$tmp/c3")"
  wait "$lpid" || fail "chat listener: $(cat "$tmp/c2")"
  grep -qx 'hi from b' "$tmp/c2" && grep -qE '^\* [12] online$' "$tmp/c2" || fail "chat listener saw: $(cat "$tmp/c2")"
  # SIGTERM: a connected client gets Close 1001, the server exits 0.
  : | "$wsc" -n 1000 -t 20000 "ws://127.0.0.1:$port/chat" >"$tmp/c4" & lpid=$!
  sleep 0.3
  stop TERM
  wait "$lpid" || fail "client at shutdown: $(cat "$tmp/c4")"
  grep -qx 'closed 1001 server shutting down' "$tmp/c4" || fail "no Close 1001 at shutdown: $(cat "$tmp/c4")"
  ;;
*) fail "unknown example" ;;
esac
rm -rf "$tmp"
echo "ok: $name"
