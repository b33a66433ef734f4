#!/usr/bin/env bash
# meson-subproject-test.sh SRC_DIR - build tests/consumers/meson, a tiny
# project that finds gev with dependency('gev', fallback: ['gev',
# 'gev_dep']), with gev as its subproject (subprojects/gev: a symlink to
# this source tree, made in a scratch directory), and run its program.
# Exit 0 ok, 1 failure.
set -u
src=$(cd "${1:?usage: meson-subproject-test.sh SRC_DIR}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL [meson subproject]: $*" >&2; exit 1; }

cp -r "$src/tests/consumers" "$tmp/proj"
mkdir "$tmp/proj/meson/subprojects"
ln -s "$src" "$tmp/proj/meson/subprojects/gev"
# --force-fallback-for: never an installed gev (pkg-config or CMake), always
# the subproject, which is what this test is about.
meson setup --force-fallback-for=gev "$tmp/b" "$tmp/proj/meson" >"$tmp/setup.log" 2>&1 || fail "meson setup:"$'\n'"$(cat "$tmp/setup.log")"
grep -q "Dependency gev found: YES .*(overridden)" "$tmp/setup.log" \
  || fail "gev did not come from the subproject:"$'\n'"$(cat "$tmp/setup.log")"
ninja -C "$tmp/b" >"$tmp/build.log" 2>&1 || fail "build:"$'\n'"$(cat "$tmp/build.log")"
out=$("$tmp/b/app" 2>&1) || fail "app: $out"
want=$(sed -n "s/^  version: '\\(.*\\)',$/\\1/p" "$src/meson.build" | head -1)
[ "$out" = "ok $want" ] || fail "app printed '$out', meson.build says version $want"
echo "meson subproject consumer: $out"
