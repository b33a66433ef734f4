#!/usr/bin/env bash
# browser.sh BIN_DIR NPM_DIR [SCREENSHOT] - the chat page of
# examples/websocket in headless Chromium (Debian chromium), two tabs,
# driven by playwright-core, which this script installs from npm into
# NPM_DIR (under the build directory) on first use:
#   npm install --no-audit --no-fund playwright-core
# playwright-core never downloads a browser; browser.js points it at
# /usr/bin/chromium. Skips (77) with a reason when chromium, node or npm
# is missing; CI installs them (.ci/run).
set -u
bin=$1 npmdir=$2 shot=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL [browser]: $*" >&2; exit 1; }

for t in /usr/bin/chromium node npm; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -d "$npmdir/node_modules/playwright-core" ]; then
  mkdir -p "$npmdir"
  (cd "$npmdir" && [ -f package.json ] || echo '{"private":true}' >package.json
   timeout 300 npm install --no-audit --no-fund playwright-core >npm.log 2>&1) ||
    fail "npm install playwright-core: $(tail -5 "$npmdir/npm.log")"
fi

# Pushes come fast for the test; slower for a screenshot worth reading.
"$bin/websocket" -p 0 -l 2 -i "$([ -n "$shot" ] && echo 2500 || echo 300)" >"$tmp/srv" 2>&1 & pid=$!
for _ in $(seq 200); do grep -q '^listening on ' "$tmp/srv" && break; sleep 0.05; done
[[ $(head -1 "$tmp/srv") =~ :([0-9]+)$ ]] || fail "server did not start: $(cat "$tmp/srv")"
port=${BASH_REMATCH[1]}
NODE_PATH="$npmdir/node_modules" timeout 90 node "$here/browser.js" \
  "http://127.0.0.1:$port/" $shot || fail "the browser run failed"
kill -TERM "$pid"; wait "$pid" || fail "server exit status $?"; pid=
