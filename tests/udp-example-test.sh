#!/usr/bin/env bash
# udp-example-test.sh UDP_ECHO UDP_CLIENT
# The udp-echo example against real sockets: datagrams of 0, 1, 1472,
# 8192 and 65,507 bytes echoed whole (a Python client), TCP echo on the
# same port, a verified load from 20 sockets without loss, batching seen
# with strace -c (fewer system calls in the server than datagrams it
# echoed), and a clean exit on SIGTERM and SIGINT. Every wait is bounded.
set -u
bin=$1 client=$2
tmp=$(mktemp -d)
pid=
fail() {
  echo "FAIL [udp-echo]: $*" >&2
  # under strace the server is strace's child: it goes first
  [ -n "$pid" ] && kill -9 $(cat /proc/"$pid"/task/"$pid"/children 2>/dev/null) "$pid" 2>/dev/null
  rm -rf "$tmp"
  exit 1
}

# start [WRAPPER...]: the server on a free port, with -l 2; sets pid, port
start() {
  rm -f "$tmp/out"
  "$@" "$bin" -p 0 -l 2 >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 200); do
    grep -q '^listening on ' "$tmp/out" 2>/dev/null && break
    sleep 0.05
  done
  line=$(head -1 "$tmp/out")
  [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "no listening line: '$line' $(cat "$tmp/err")"
  port=${BASH_REMATCH[1]}
}

# stop SIGNAL [PID]: the signal to PID (default: the server), then exit
# status 0 within 10 s
stop() {
  kill -"$1" "${2:-$pid}"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "did not exit within 10 s of SIG$1"
  wait "$pid"; st=$?
  [ "$st" -eq 0 ] || fail "exit status $st after SIG$1"
  pid=
}

command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; rm -rf "$tmp"; exit 77; }

start
python3 - "$port" <<'PY' || fail "datagram sizes"
import os, socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for n in (0, 1, 1472, 8192, 65507):
    data = os.urandom(n)
    s.sendto(data, ("127.0.0.1", port))
    back, _ = s.recvfrom(70000)
    assert back == data, "size %d came back as %d bytes" % (n, len(back))
print("sizes ok")
PY
exec 3<>/dev/tcp/127.0.0.1/"$port" || fail "no TCP listener on the port"
printf 'hello\n' >&3
IFS= read -r -t 5 line <&3 || fail "no TCP echo"
[ "$line" = hello ] || fail "TCP echo: '$line'"
exec 3<&-
"$client" -p "$port" -c 20 -P 4 -n 500 -t 2 --max-lost 0 >"$tmp/load" 2>&1 || fail "load: $(cat "$tmp/load")"
grep -q 'datagrams=10000 ' "$tmp/load" || fail "load: $(cat "$tmp/load")"
stop TERM

if ! command -v strace >/dev/null; then
  echo "SKIP (batching part): strace not installed"
else
  # LeakSanitizer cannot run under ptrace: no leak check in this run.
  ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" start strace -f -c -o "$tmp/strace"
  "$client" -p "$port" -c 50 -P 16 -n 400 -t 2 >"$tmp/load" 2>&1
  # The signal goes to the server, strace's child; strace exits with it.
  child=$(cat /proc/"$pid"/task/"$pid"/children 2>/dev/null)
  [ -n "$child" ] || fail "no server process under strace"
  stop INT "${child%% *}"
  n=$(sed -n 's/^datagrams=\([0-9]*\) .*/\1/p' "$tmp/load")
  calls=$(awk '$NF == "total" { print $(NF - 2) }' "$tmp/strace")
  recv=$(awk '$NF == "recvmmsg" { print $4 }' "$tmp/strace")
  send=$(awk '$NF == "sendmmsg" { print $4 }' "$tmp/strace")
  echo "batching: $n datagrams echoed with $calls system calls in the server ($recv recvmmsg, $send sendmmsg)"
  [ -n "$n" ] && [ "$n" -ge 10000 ] || fail "load under strace: $(cat "$tmp/load")"
  [ -n "$recv" ] && [ -n "$send" ] || fail "no recvmmsg/sendmmsg: $(cat "$tmp/strace")"
  [ "$calls" -lt "$n" ] || fail "$calls system calls for $n datagrams: not batched"
fi
rm -rf "$tmp"
echo "ok: udp-echo"
