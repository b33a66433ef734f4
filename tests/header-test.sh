#!/usr/bin/env bash
# header-test.sh SRCDIR - every public header compiles on its own, as C11
# with -Wall -Wextra -Werror -pedantic, and (when a C++ compiler exists) as
# C++17 with -Wall -Wextra -Wpedantic -Werror, all of them included together.
set -u
src=$1
cc=${CC:-cc}
cxx=${CXX:-c++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for h in "$src"/include/gev/*.h; do
  name=$(basename "$h")
  printf '#include <gev/%s>\nint main(void) { return 0; }\n' "$name" >"$tmp/t.c"
  if ! $cc -std=c11 -Wall -Wextra -Werror -pedantic -I"$src/include" -c "$tmp/t.c" -o "$tmp/t.o"; then
    echo "FAIL: <gev/$name> does not compile alone as C11"
    fail=1
  fi
done
if command -v "$cxx" >/dev/null 2>&1; then
  {
    for h in "$src"/include/gev/*.h; do echo "#include <gev/$(basename "$h")>"; done
    echo 'int main() { gev_handler h = {}; (void)h; return gev_strerror(0) ? 0 : 1; }'
  } >"$tmp/t.cc"
  if ! $cxx -std=c++17 -Wall -Wextra -Wpedantic -Werror -I"$src/include" -c "$tmp/t.cc" -o "$tmp/t.o"; then
    echo "FAIL: the headers do not compile as C++"
    fail=1
  fi
else
  echo "note: no C++ compiler ($cxx), C++ check not run"
fi
[ $fail -eq 0 ] && echo "ok: every public header compiles alone (C11) and as C++17, -Wall -Wextra -Wpedantic"
exit $fail
