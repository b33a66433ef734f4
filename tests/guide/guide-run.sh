#!/usr/bin/env bash
# guide-run.sh NAME EXE - run one guide program the way its page says:
#   tls     with a fresh self-signed certificate for 127.0.0.1 (openssl);
#   readme  the README's server: start it on a free port, get an echo,
#           send SIGTERM, and expect a clean exit (status 0) within 10 s;
#   others  plain, expecting exit status 0.
set -u
name=${1:?usage: guide-run.sh NAME EXE}
exe=${2:?usage: guide-run.sh NAME EXE}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $name in
tls)
  command -v openssl >/dev/null 2>&1 || { echo "SKIP: openssl (the command) is not installed"; exit 77; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >"$tmp/openssl.log" 2>&1 \
    || { cat "$tmp/openssl.log"; exit 1; }
  exec "$exe" "$tmp/cert.pem" "$tmp/key.pem"
  ;;
readme)
  "$exe" 127.0.0.1:0 >"$tmp/out" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on port \([0-9]*\)$/\1/p' "$tmp/out")
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { kill -9 $pid; cat "$tmp/out"; echo "FAIL: no 'listening on port N' line"; exit 1; }
  exec 3<>"/dev/tcp/127.0.0.1/$port" || { kill -9 $pid; exit 1; }
  printf 'hello\n' >&3
  read -r -t 5 line <&3
  exec 3>&-
  [ "$line" = hello ] || { kill -9 $pid; echo "FAIL: echo gave '$line'"; exit 1; }
  kill -TERM $pid
  for _ in $(seq 200); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
  if kill -0 $pid 2>/dev/null; then kill -9 $pid; echo "FAIL: still running 10 s after SIGTERM"; exit 1; fi
  wait $pid
  st=$?
  cat "$tmp/out"
  [ $st -eq 0 ] || { echo "FAIL: exit status $st after SIGTERM"; exit 1; }
  echo "readme server: echoed, shut down on SIGTERM, exit 0"
  ;;
*)
  exec "$exe"
  ;;
esac
