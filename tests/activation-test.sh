#!/usr/bin/env bash
# activation-test.sh ECHO ECHO_CLIENT
# Socket activation as systemd does it, through systemd-socket-activate
# (Debian package systemd): it binds the sockets, waits for the first
# connection and execs the echo example with them as fds 3 and 4
# (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES). The example adopts them with
# --listen fd:NAME and --listen fd:3; the connection that woke it up is
# served (it waited in the socket's queue), the unix one too; SIGTERM ends
# it with status 0. An unknown name fails with a clear error. Every wait
# is bounded.
set -u
echo=$1 client=$2
command -v systemd-socket-activate >/dev/null ||
  { echo "SKIP: systemd-socket-activate (Debian package systemd) not installed"; exit 77; }
tmp=$(mktemp -d)
pid=
fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/err "$tmp"/out; do [ -f "$f" ] && sed "s|^|  ${f##*/}: |" "$f" >&2; done
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  rm -rf "$tmp"
  exit 1
}

# activate ARGS...: runs systemd-socket-activate on a free TCP port (and
# the unix socket $tmp/sock) with ARGS after it; sets pid and port. A port
# someone else took meanwhile makes it exit at once: try another.
activate() {
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    rm -f "$tmp/out" "$tmp/err" "$tmp/sock"
    systemd-socket-activate -l "127.0.0.1:$port" -l "$tmp/sock" "$@" \
      >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    for _ in $(seq 100); do
      [ "$(grep -c '^Listening on' "$tmp/err")" -eq 2 ] && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
  done
  fail "systemd-socket-activate never listened"
}

# line_through PORT TEXT: one line echoed back over TCP within 5 s
line_through() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || fail "cannot connect to $1"
  printf '%s\n' "$2" >&3
  IFS= read -r -t 5 reply <&3 || { exec 3<&-; fail "no echo of '$2'"; }
  exec 3<&-
  [ "$reply" = "$2" ] || fail "echoed '$reply' for '$2'"
}

stop() { # the example got SIGTERM: exit status 0 within 10 s
  kill -TERM "$pid"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "did not exit within 10 s of SIGTERM"
  wait "$pid"; local st=$?
  [ "$st" -eq 0 ] || fail "exit status $st after SIGTERM"
  pid=
}

# By name: systemd's FileDescriptorName= (here --fdname), mixed TCP and unix.
activate --fdname=web:local -- "$echo" -l 2 --listen fd:local --listen fd:web
line_through "$port" "hello through an activated socket"
grep -qx "listening on fd:local" "$tmp/out" || fail "no listening line for fd:local"
grep -qx "listening on fd:web port $port" "$tmp/out" || fail "no listening line for fd:web"
"$client" -U "$tmp/sock" -c 4 -n 100 -s 512 -d 10 >"$tmp/client" 2>&1 ||
  fail "echo-client over the unix socket: $(cat "$tmp/client")"
line_through "$port" "and again"
stop

# By number, as sd_listen_fds counts them: fd 3 is the first -l.
activate -- "$echo" --listen fd:3
line_through "$port" "fd 3"
grep -qx "listening on fd:3 port $port" "$tmp/out" || fail "no listening line for fd:3"
stop

# A name systemd did not pass: the example says why and exits 1.
activate --fdname=web:local -- "$echo" --listen fd:nope
exec 3<>"/dev/tcp/127.0.0.1/$port" # wakes it up; it exits without serving
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
exec 3<&-
kill -0 "$pid" 2>/dev/null && fail "fd:nope: still running"
wait "$pid"; st=$? pid=
[ "$st" -eq 1 ] || fail "fd:nope: exit status $st, want 1"
grep -q "cannot listen on .*No such file or directory" "$tmp/err" ||
  fail "fd:nope: no clear error"
rm -rf "$tmp"
echo "ok: socket activation by name and number, TCP and unix"
