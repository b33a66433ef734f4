#!/usr/bin/env bash
# tls-example-test.sh BUILD_EXAMPLES_DIR CERTS_SCRIPT - the examples over
# TLS against real clients: echo --tls-cert with tls-client and openssl
# s_client; http --tls-cert with curl (GET, keep-alive reuse) and a
# pipelined pair through s_client; websocket --tls-cert with node's ws,
# Python's websockets (each skips, saying so, without its package) and
# gev's ws-client over wss://. Every step
# is bounded by timeout(1).
# Exit 77 (skip) only when openssl or curl is missing, saying which.
set -u
bin=$1 certs=$2
here=$(cd "$(dirname "$0")" && pwd)
for tool in openssl curl timeout; do
  command -v $tool >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 77; }
done
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
sh "$certs" "$tmp" >"$tmp/certs.log" 2>&1 || fail "tls-certs.sh: $(cat "$tmp/certs.log")"

start() { # NAME ARGS... -> port in $port
  "$bin/$1" -p 0 "${@:2}" --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key" \
    >"$tmp/$1.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$tmp/$1.out")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  fail "$1 did not print its listening line: $(cat "$tmp/$1.out")"
}

# echo: tls-client verifies (by name and by IP) and gets its bytes back.
start echo
head -c 300000 /dev/urandom >"$tmp/in"
timeout 20 "$bin/tls-client" --ca "$tmp/ca.pem" "localhost:$port" <"$tmp/in" \
  >"$tmp/echoed" 2>"$tmp/client.err" || fail "tls-client: $(cat "$tmp/client.err")"
cmp -s "$tmp/in" "$tmp/echoed" || fail "tls-client: echo differs"
printf 'by ip\n' | timeout 10 "$bin/tls-client" --ca "$tmp/ca.pem" "127.0.0.1:$port" \
  2>/dev/null | grep -qx 'by ip' || fail "tls-client by IP"
if timeout 10 "$bin/tls-client" --ca "$tmp/rogue-ca.pem" "localhost:$port" </dev/null \
  >/dev/null 2>&1; then fail "tls-client accepted a certificate from another CA"; fi
(printf 'from s_client\n'; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
  -CAfile "$tmp/ca.pem" -verify_return_error -servername localhost -quiet 2>/dev/null \
  | grep -qx 'from s_client' || fail "s_client echo"

# http: curl GET twice on one connection, then a pipelined pair.
start http
timeout 10 curl -sS -v --cacert "$tmp/ca.pem" "https://localhost:$port/" \
  "https://localhost:$port/plaintext" >"$tmp/bodies" 2>"$tmp/curl.err" \
  || fail "curl: $(cat "$tmp/curl.err")"
[ "$(cat "$tmp/bodies")" = "Hello, World!Hello, World!" ] || fail "curl bodies: $(cat "$tmp/bodies")"
grep -Eq 'Re-?using existing connection' "$tmp/curl.err" || fail "curl did not reuse the connection"
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' \
  | timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$tmp/ca.pem" \
    -verify_return_error -quiet 2>/dev/null >"$tmp/pipelined"
[ "$(grep -o 'HTTP/1.1 200 OK' "$tmp/pipelined" | wc -l)" = 2 ] || fail "pipelined pair: $(cat "$tmp/pipelined")"

# websocket: node's ws (Debian node-ws) over wss:// against /echo, the
# server verified with the test CA (WS_CA), every length class.
start websocket
export NODE_PATH=/usr/share/nodejs:/usr/lib/nodejs
if command -v node >/dev/null && node -e "require('ws')" 2>/dev/null; then
  WS_CA="$tmp/ca.pem" timeout 30 node "$here/ws/node-client.js" "wss://localhost:$port/echo" \
    >"$tmp/node.out" 2>&1 || fail "node ws over wss: $(cat "$tmp/node.out")"
  cat "$tmp/node.out"
  if WS_CA="$tmp/rogue-ca.pem" timeout 30 node "$here/ws/node-client.js" \
    "wss://localhost:$port/echo" >/dev/null 2>&1; then
    fail "node ws accepted a certificate from another CA"
  fi
else
  echo "SKIP (this step only): node or node-ws not installed; CI installs them"
fi
# gev's own ws-client over wss://, by name and by IP, text and binary;
# a certificate from another CA is refused before any message.
printf 'one\ntwo\n' | timeout 20 "$bin/ws-client" -c "$tmp/ca.pem" \
  "wss://localhost:$port/echo" >"$tmp/wsc.out" 2>&1 || fail "ws-client over wss: $(cat "$tmp/wsc.out")"
[ "$(cat "$tmp/wsc.out")" = "$(printf 'one\ntwo\nclosed 1000')" ] || fail "ws-client over wss: $(cat "$tmp/wsc.out")"
printf 'bin\n' | timeout 20 "$bin/ws-client" -b --ca "$tmp/ca.pem" \
  "wss://127.0.0.1:$port/echo" >"$tmp/wsc.out" 2>&1 || fail "ws-client over wss by IP: $(cat "$tmp/wsc.out")"
[ "$(cat "$tmp/wsc.out")" = "$(printf 'binary 3\nclosed 1000')" ] || fail "ws-client over wss by IP: $(cat "$tmp/wsc.out")"
if printf 'x\n' | timeout 20 "$bin/ws-client" -c "$tmp/rogue-ca.pem" \
  "wss://localhost:$port/echo" >"$tmp/wsc.out" 2>&1; then
  fail "ws-client accepted a certificate from another CA: $(cat "$tmp/wsc.out")"
fi
grep -q '^x$' "$tmp/wsc.out" && fail "ws-client echoed through an unverified server"
# And Python's websockets (Debian python3-websockets), Debian's interpreter.
if /usr/bin/python3 -c 'import websockets' 2>/dev/null; then
  WS_CA="$tmp/ca.pem" timeout 30 /usr/bin/python3 "$here/ws/py-client.py" \
    "wss://localhost:$port/echo" >"$tmp/py.out" 2>&1 || fail "python websockets over wss: $(cat "$tmp/py.out")"
  cat "$tmp/py.out"
else
  echo "SKIP (this step only): python3-websockets not installed; CI installs it"
fi
echo "ok: echo, http and websocket over TLS (tls-client, s_client, curl, node ws, python websockets, ws-client)"
