#!/usr/bin/env bash
# abi-test.sh [--update] LIB LIST [LIB LIST ...] - the dynamic symbols each
# LIB exports (nm -D --defined-only) must be exactly the names in its LIST,
# one a line, sorted: adding, removing or renaming an exported symbol is a
# conscious change (a new LIST in the same commit, and a CHANGELOG line; a
# removal or incompatible change also bumps the soname, doc/versioning.md).
# --update rewrites each LIST from its LIB instead:
#   ninja -C build update-symbols
# Exit 0 ok, 1 mismatch.
set -u
update=
[ "${1:-}" = --update ] && { update=1; shift; }
[ $# -ge 2 ] && [ $(($# % 2)) -eq 0 ] || { echo "usage: abi-test.sh [--update] LIB LIST [LIB LIST ...]"; exit 1; }
command -v nm >/dev/null 2>&1 || { echo "FAIL: nm not found (binutils)"; exit 1; }
status=0
while [ $# -gt 0 ]; do
  lib=$1 list=$2
  shift 2
  actual=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' \
    | grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' | LC_ALL=C sort -u)
  if [ -n "$update" ]; then
    printf '%s\n' "$actual" >"$list"
    echo "wrote $(wc -l <"$list") symbols of $(basename "$lib") to $list"
    continue
  fi
  if [ ! -f "$list" ]; then
    echo "FAIL: no symbol list $list (ninja -C build update-symbols)"
    status=1
    continue
  fi
  expected=$(grep -v '^#' "$list" | LC_ALL=C sort -u)
  if [ "$actual" != "$expected" ]; then
    echo "FAIL: the symbols $(basename "$lib") exports differ from $list"
    echo "(+ exported but not listed, - listed but not exported):"
    diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | sed -n 's/^> /+ /p; s/^< /- /p'
    echo "If the change is intended: ninja -C build update-symbols, and say so in CHANGELOG.md."
    status=1
    continue
  fi
  echo "ok: $(basename "$lib") exports exactly the $(printf '%s\n' "$actual" | wc -l) symbols of $(basename "$list")"
done
exit $status
