#!/usr/bin/env bash
# abi-test.sh LIB LIST [--update] - the dynamic symbols LIB exports
# (nm -D --defined-only) must be exactly the names in LIST, one a line,
# sorted: adding, removing or renaming an exported symbol is a conscious
# change (a new LIST in the same commit, and a CHANGELOG line; a removal
# or incompatible change also bumps the soname, doc/versioning.md).
# --update rewrites LIST from LIB instead:
#   ninja -C build update-symbols
# Exit 0 ok, 1 mismatch.
set -u
lib=${1:?usage: abi-test.sh LIB LIST [--update]}
list=${2:?usage: abi-test.sh LIB LIST [--update]}
command -v nm >/dev/null 2>&1 || { echo "FAIL: nm not found (binutils)"; exit 1; }
actual=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' \
  | grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' | LC_ALL=C sort -u)
if [ "${3:-}" = --update ]; then
  printf '%s\n' "$actual" >"$list"
  echo "wrote $(wc -l <"$list") symbols of $(basename "$lib") to $list"
  exit 0
fi
[ -f "$list" ] || { echo "FAIL: no symbol list $list (ninja -C build update-symbols)"; exit 1; }
expected=$(grep -v '^#' "$list" | LC_ALL=C sort -u)
if [ "$actual" != "$expected" ]; then
  echo "FAIL: the symbols $(basename "$lib") exports differ from $list"
  echo "(+ exported but not listed, - listed but not exported):"
  diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | sed -n 's/^> /+ /p; s/^< /- /p'
  echo "If the change is intended: ninja -C build update-symbols, and say so in CHANGELOG.md."
  exit 1
fi
echo "ok: $(basename "$lib") exports exactly the $(printf '%s\n' "$actual" | wc -l) symbols of $(basename "$list")"
