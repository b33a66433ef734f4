#!/usr/bin/env bash
# dns-example-test.sh DNS
# The dns example against dig (Debian dnsutils), over UDP and TCP: A, AAAA,
# MX, TXT, a CNAME followed, NXDOMAIN with the SOA, REFUSED outside the
# zone, the AA flag; then SIGTERM stops it with status 0.
set -u
bin=$1
tmp=$(mktemp -d)
pid=
fail() {
  echo "FAIL [dns]: $*" >&2
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  rm -rf "$tmp"
  exit 1
}
command -v dig >/dev/null || { echo "SKIP: dig not installed (Debian dnsutils)"; rm -rf "$tmp"; exit 77; }

"$bin" -p 0 -l 2 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do
  grep -q '^listening on ' "$tmp/out" 2>/dev/null && break
  sleep 0.05
done
line=$(head -1 "$tmp/out")
[[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "no listening line: '$line' $(cat "$tmp/err")"
port=${BASH_REMATCH[1]}

# q EXPECTED DIG-ARGS...: dig +short's output must be EXPECTED
q() {
  local want=$1; shift
  got=$(dig @127.0.0.1 -p "$port" +time=3 +tries=2 +short "$@" 2>&1 | tr '\n' ' ' | sed 's/ $//')
  [ "$got" = "$want" ] || fail "dig $*: '$got', expected '$want'"
}
for t in "" +tcp; do
  q "192.0.2.80" $t www.gev.test A
  q "192.0.2.80" $t WWW.Gev.Test A
  q "2001:db8::80" $t www.gev.test AAAA
  q "10 mail.gev.test." $t gev.test MX
  q '"served by gev"' $t gev.test TXT
  q "www.gev.test. 192.0.2.80" $t alias.gev.test A
  q "ns1.gev.test." $t gev.test NS
done
full=$(dig @127.0.0.1 -p "$port" +time=3 +tries=2 nothere.gev.test A 2>&1)
grep -q 'status: NXDOMAIN' <<<"$full" || fail "no NXDOMAIN: $full"
grep -q 'flags: qr aa' <<<"$full" || fail "not authoritative: $full"
grep -q 'IN[[:space:]]*SOA[[:space:]]*ns1.gev.test. hostmaster.gev.test.' <<<"$full" || fail "no SOA with NXDOMAIN: $full"
full=$(dig @127.0.0.1 -p "$port" +time=3 +tries=2 example.com A 2>&1)
grep -q 'status: REFUSED' <<<"$full" || fail "outside the zone not refused: $full"
full=$(dig @127.0.0.1 -p "$port" +time=3 +tries=2 www.gev.test TXT 2>&1)
grep -q 'status: NOERROR' <<<"$full" && grep -q 'ANSWER: 0' <<<"$full" || fail "no NODATA: $full"

kill -TERM "$pid"
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && fail "did not exit within 10 s of SIGTERM"
wait "$pid"; st=$?
pid=
[ "$st" -eq 0 ] || fail "exit status $st after SIGTERM"
rm -rf "$tmp"
echo "ok: dns"
