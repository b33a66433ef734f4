#!/usr/bin/env bash
# man-test.sh BUILD_DIR - install into a scratch DESTDIR and check the man
# pages: one section-3 page for every function libgev (and libgev-tls, when
# built) exports, pages for the types (gev_handler), gev(7), and that
# `man -M PREFIX/share/man gev_conn_send` shows the function's page.
# Exit 0 ok, 1 failure, 77 (SKIP) when the docs were not built (doxygen
# missing or -Ddocs=disabled) or man is not installed.
set -u
build=${1:?usage: man-test.sh BUILD_DIR}
[ -d "$build/doc/man3" ] || { echo "SKIP: the man pages were not built (doxygen not installed, or -Ddocs=disabled)"; exit 77; }
command -v man >/dev/null 2>&1 || { echo "SKIP: man is not installed (Debian: man-db)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL [man]: $*" >&2; exit 1; }

meson install -C "$build" --no-rebuild --destdir "$tmp/root" --quiet >"$tmp/install.log" 2>&1 \
  || fail "meson install: $(cat "$tmp/install.log")"
page=$(find "$tmp/root" -path '*/man3/gev_conn_send.3' -print -quit)
[ -n "$page" ] || fail "man3/gev_conn_send.3 not installed"
mandir=$(dirname "$(dirname "$page")")
[ -f "$mandir/man7/gev.7" ] || fail "gev.7 not installed in $mandir/man7"

# Every exported function has its page.
missing=
n=0
for lib in $(find "$tmp/root" -name 'libgev*.so' -type l -o -name 'libgev*.so' -type f); do
  for sym in $(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }'); do
    n=$((n + 1))
    [ -f "$mandir/man3/$sym.3" ] || missing="$missing $sym"
  done
done
[ "$n" -gt 0 ] || fail "no exported function found in the installed libraries"
[ -z "$missing" ] || fail "exported functions without a man page:$missing"

export MANWIDTH=80 LC_ALL=C MANPAGER=cat PAGER=cat
out=$(man -M "$mandir" gev_conn_send 2>&1) || fail "man -M $mandir gev_conn_send: $out"
for want in 'gev_conn_send(3)' 'SYNOPSIS' 'int gev_conn_send(gev_conn \*c, const void \*p, size_t n);' \
            'RETURN VALUE' 'ENOBUFS' 'Any thread'; do
  grep -q -- "$want" <<<"$out" || fail "man gev_conn_send lacks '$want':"$'\n'"$out"
done
out=$(man -M "$mandir" gev_handler 2>&1) || fail "man -M $mandir gev_handler: $out"
grep -q 'void (\*on_message)(gev_conn \*c, ringbuffer \*in, ringbuffer \*out);' <<<"$out" && grep -q MEMBERS <<<"$out" \
  || fail "man gev_handler lacks the struct or its members:"$'\n'"$out"
out=$(man -M "$mandir" 7 gev 2>&1) || fail "man -M $mandir 7 gev: $out"
grep -q 'GEV(7)' <<<"$out" && grep -q THREADS <<<"$out" || fail "man 7 gev:"$'\n'"$out"
echo "ok: $n exported functions, each with a man page in ${mandir#"$tmp/root"}, and $(ls "$mandir/man3" | wc -l) pages in all; gev(7); man -M shows gev_conn_send and gev_handler"
