#!/usr/bin/env bash
# cmake-test.sh BUILD_DIR SRC_DIR - install the build into a scratch
# DESTDIR, then configure, build and run tests/consumers/cmake with
# find_package(gev 0.2 REQUIRED) (CMAKE_PREFIX_PATH = the installed
# prefix): the shared target gev::gev and, when installed, gev::gev_static.
# gev::tls too when gev was built with TLS. Also checks that find_package(gev 0.1) and (gev 1.0) refuse this version.
# Exit 0 ok, 1 failure, 77 (SKIP) when cmake is not installed.
set -u
build=${1:?usage: cmake-test.sh BUILD_DIR SRC_DIR}
src=${2:?usage: cmake-test.sh BUILD_DIR SRC_DIR}
command -v cmake >/dev/null 2>&1 || { echo "SKIP: cmake is not installed (Debian: cmake; .ci/run installs it)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL [cmake consumer]: $*" >&2; exit 1; }

meson install -C "$build" --no-rebuild --destdir "$tmp/root" --quiet >"$tmp/install.log" 2>&1 \
  || fail "meson install: $(cat "$tmp/install.log")"
config=$(find "$tmp/root" -name gevConfig.cmake -print -quit)
[ -n "$config" ] || fail "gevConfig.cmake not installed"
[ -f "$(dirname "$config")/gevConfigVersion.cmake" ] || fail "gevConfigVersion.cmake not installed"
# LIBDIR/cmake/gev -> the prefix is three or four levels up; ask meson.
prefix=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
root=$tmp/root$prefix
[ -d "$root" ] || fail "prefix $root missing"

cp -r "$src/tests/consumers" "$tmp/proj"
cmake -S "$tmp/proj/cmake" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$root" \
  -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 || fail "cmake configure:"$'\n'"$(cat "$tmp/cmake.log")"
cmake --build "$tmp/b" >"$tmp/build.log" 2>&1 || fail "cmake build:"$'\n'"$(cat "$tmp/build.log")"
out=$("$tmp/b/app" 2>&1) || fail "app (shared): $out"
want=$(meson introspect "$build" --projectinfo | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
# The headers' GEV_VERSION_STRING and gev_version_string() agree (app.c
# checks), and both are meson.build's version.
[ "$out" = "ok $want" ] || fail "app printed '$out', meson.build says version $want"
# It ran on the installed library (the build tree's RPATH), not another.
if command -v ldd >/dev/null 2>&1; then
  ldd "$tmp/b/app" | grep -q "=> $root/.*libgev\.so" || fail "app did not load the installed libgev: $(ldd "$tmp/b/app")"
fi
if [ -x "$tmp/b/app_static" ]; then
  out=$("$tmp/b/app_static" 2>&1) || fail "app (static): $out"
  ldd "$tmp/b/app_static" 2>/dev/null | grep -q libgev && fail "app_static links libgev.so"
fi
if grep -q 'set(gev_HAS_TLS TRUE)' "$config"; then
  [ -x "$tmp/b/app_tls" ] || fail "gev was built with TLS but gev::tls gave no app_tls"
  out_tls=$("$tmp/b/app_tls" 2>&1) || fail "app_tls: $out_tls"
  tls_note=", gev::tls too"
fi

# The version file: 0.x minors are not compatible with each other.
for v in 0.1 1.0; do
  mkdir -p "$tmp/v$v"
  cat >"$tmp/v$v/CMakeLists.txt" <<EOC
cmake_minimum_required(VERSION 3.16)
project(v NONE)
find_package(gev $v QUIET)
if(gev_FOUND)
  message(FATAL_ERROR "find_package(gev $v) accepted gev \${gev_VERSION}")
endif()
EOC
  cmake -S "$tmp/v$v" -B "$tmp/v$v/b" -DCMAKE_PREFIX_PATH="$root" >"$tmp/v.log" 2>&1 \
    || fail "version check $v:"$'\n'"$(cat "$tmp/v.log")"
done
echo "cmake consumer: $out (find_package(gev 0.2) found it${tls_note:-}; 0.1 and 1.0 refused)"
