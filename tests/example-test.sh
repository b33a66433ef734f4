#!/usr/bin/env bash
# example-test.sh EXAMPLE BIN_DIR ECHO_CLIENT
# Starts an example server on a free port, talks to it over loopback with
# bash's /dev/tcp (and the echo load client), then stops it with SIGINT and
# checks that it exits 0. Every wait is bounded.
set -u
name=$1 bin=$2/$1 client=$3
tmp=$(mktemp -d)
pid=
fail() { echo "FAIL [$name]: $*" >&2; [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; exit 1; }

start() {
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

stop() {
  kill -INT "$pid"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "did not exit within 10 s of SIGINT"
  wait "$pid"; st=$?
  [ "$st" -eq 0 ] || fail "exit status $st after SIGINT"
  pid=
}

# read_line FD: one line within 5 s into $line, or fail
read_line() { IFS= read -r -t 5 line <&"$1" || fail "no line on fd $1"; }

case $name in
echo)
  start
  exec 3<>/dev/tcp/127.0.0.1/"$port"
  printf 'hello gev\n' >&3
  read_line 3
  [ "$line" = "hello gev" ] || fail "echoed '$line'"
  exec 3<&-
  "$client" -p "$port" -c 20 -P 4 -s 1000 -n 200 -d 30 >"$tmp/client" || fail "echo-client: $(cat "$tmp/client")"
  stop
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
*) fail "unknown example" ;;
esac
rm -rf "$tmp"
echo "ok: $name"
