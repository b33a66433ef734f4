#!/usr/bin/env bash
# meson-subproject-test.sh SRC_DIR - gev as a meson subproject, two ways,
# each in a scratch directory with subprojects/gev a symlink to this tree:
#   meson/       dependency('gev', fallback: ['gev', 'gev_dep'])
#   meson-wrap/  dependency('gev') alone, with doc/gev.wrap in subprojects/
# Each is configured with --force-fallback-for=gev (never an installed gev),
# built, and its program run; it must print "ok" and meson.build's version.
# Exit 0 ok, 1 failure.
set -u
src=$(cd "${1:?usage: meson-subproject-test.sh SRC_DIR}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL [meson subproject]: $*" >&2; exit 1; }
want=$(sed -n "s/^  version: '\\(.*\\)',$/\\1/p" "$src/meson.build" | head -1)

cp -r "$src/tests/consumers" "$tmp/proj"
for kind in meson meson-wrap; do
  dir=$tmp/proj/$kind
  mkdir "$dir/subprojects"
  ln -s "$src" "$dir/subprojects/gev"
  opts=()
  if [ $kind = meson-wrap ]; then
    cp "$src/doc/gev.wrap" "$dir/subprojects/gev.wrap"
    opts=(-Dgev:examples=false -Dgev:tests=disabled -Dgev:docs=disabled -Dgev:tls=disabled)
  fi
  meson setup --force-fallback-for=gev "${opts[@]}" "$tmp/b-$kind" "$dir" >"$tmp/setup.log" 2>&1 \
    || fail "$kind: meson setup:"$'\n'"$(cat "$tmp/setup.log")"
  grep -q "Dependency gev found: YES .*(overridden)" "$tmp/setup.log" \
    || fail "$kind: gev did not come from the subproject:"$'\n'"$(cat "$tmp/setup.log")"
  ninja -C "$tmp/b-$kind" >"$tmp/build.log" 2>&1 || fail "$kind: build:"$'\n'"$(cat "$tmp/build.log")"
  out=$("$tmp/b-$kind/app" 2>&1) || fail "$kind: app: $out"
  [ "$out" = "ok $want" ] || fail "$kind: app printed '$out', meson.build says version $want"
done
echo "meson subproject consumers (fallback: and gev.wrap): $out"
