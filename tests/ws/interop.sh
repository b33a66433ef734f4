#!/usr/bin/env bash
# interop.sh PEER BIN_DIR - gev's WebSocket against an independent
# implementation from Debian, both ways:
#   node    node's ws (node-ws): node-client.js against examples/websocket's
#           /echo; gev's ws-client against node-server.js
#   python  Python's websockets (python3-websockets): py-client.py against
#           /echo; ws-client against py-server.py
# Skips (77) with a reason when the peer is not installed; CI installs it
# (.ci/run). Every wait is bounded.
set -u
peer=$1 bin=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL [$peer]: $*" >&2; exit 1; }

export NODE_PATH=/usr/share/nodejs:/usr/lib/nodejs
case $peer in
node)
  command -v node >/dev/null && node -e "require('ws')" 2>/dev/null ||
    { echo "SKIP: node or node-ws (Debian node-ws) not installed"; exit 77; }
  client=(node "$here/node-client.js") server=(node "$here/node-server.js") ;;
python)
  # Debian's interpreter: the package installs into its dist-packages
  # (a python3 earlier on PATH, pyenv's say, would not see it).
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  "$py" -c 'import websockets' 2>/dev/null ||
    { echo "SKIP: python3-websockets not installed"; exit 77; }
  client=("$py" "$here/py-client.py") server=("$py" "$here/py-server.py") ;;
*) fail "unknown peer" ;;
esac

# wait_port FILE: the port of the "listening on HOST:PORT" line, within 10 s
wait_port() {
  for _ in $(seq 200); do
    grep -q '^listening on ' "$1" 2>/dev/null && break
    sleep 0.05
  done
  [[ $(head -1 "$1") =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "no listening line in $1: $(cat "$1")"
  port=${BASH_REMATCH[1]}
}

# 1. Their client, our server (the example, 2 loops).
"$bin/websocket" -p 0 -l 2 >"$tmp/srv" 2>&1 & pids+=($!)
wait_port "$tmp/srv"
timeout 30 "${client[@]}" "ws://127.0.0.1:$port/echo" >"$tmp/out" 2>&1 ||
  fail "their client against gev: $(cat "$tmp/out")"
cat "$tmp/out"

# 2. Our client, their server.
"${server[@]}" >"$tmp/peer" 2>&1 & pids+=($!)
wait_port "$tmp/peer"
big=$(head -c 60000 /dev/zero | tr '\0' z)
printf 'hello\n\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\n\n%s\n' "$big" |
  timeout 30 "$bin/ws-client" "ws://127.0.0.1:$port/" >"$tmp/out" 2>&1 ||
  fail "gev's client against theirs: $(head -c 500 "$tmp/out")"
printf 'hello\n\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\n\n%s\nclosed 1000\n' "$big" >"$tmp/want"
cmp -s "$tmp/out" "$tmp/want" || fail "gev's client got: $(head -c 500 "$tmp/out")"
printf 'bin\n' | timeout 30 "$bin/ws-client" -b "ws://127.0.0.1:$port/" >"$tmp/out" 2>&1 &&
  grep -qx 'binary 3' "$tmp/out" || fail "binary echo from theirs: $(cat "$tmp/out")"
echo "ok: gev's client against $peer's server"
echo "ok: $peer both ways"
