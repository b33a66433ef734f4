#!/usr/bin/env bash
# install-test.sh BUILD_DIR
# Installs the build into a temporary DESTDIR (never the real system), then
# builds an outside program against it the way a user would (pkg-config gev)
# and runs it on the installed shared library. Also checks that libgev.so
# exports only gev_* / ringbuffer_* symbols and has a versioned soname.
# Exit 0 on success, 1 on failure, 77 (SKIP) when pkg-config or cc is missing.
set -u

build=${1:?usage: install-test.sh BUILD_DIR}
cc=${CC:-cc}

skip() { echo "SKIP: $*"; exit 77; }
command -v pkg-config >/dev/null 2>&1 || skip "pkg-config not found"
command -v "$cc" >/dev/null 2>&1 || skip "C compiler '$cc' not found"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL [install]: $*" >&2; exit 1; }

root=$tmp/root
meson install -C "$build" --destdir "$root" --quiet >"$tmp/install.log" 2>&1 \
  || fail "meson install: $(cat "$tmp/install.log")"

# Locate what was installed rather than guessing prefix and libdir.
pc=$(find "$root" -name gev.pc -print -quit)
[ -n "$pc" ] || fail "gev.pc not installed"
lib=$(find "$root" -name libgev.so -print -quit)
[ -n "$lib" ] || fail "libgev.so not installed"
libdir=$(dirname "$lib")

# The sysroot makes pkg-config prefix every -I/-L path with the DESTDIR.
# Keep "system" directories too: under the sysroot they are not the system's.
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR=$root
export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
flags=$(pkg-config --cflags --libs gev) || fail "pkg-config --cflags --libs gev"

cat >"$tmp/app.c" <<'EOF'
/* An outside user of the installed library. */
#include <gev/ringbuffer.h>
#include <gev/gev.h> /* the umbrella header must compile on its own too */

#include <stdio.h>
#include <string.h>

int main(void) {
  static const char msg[] = "hello from outside gev";
  char out[sizeof(msg)] = {0};
  ringbuffer *rb = ringbuffer_new(0);
  if (!rb)
    return 2;
  if (ringbuffer_write(rb, msg, sizeof(msg)) != 0 ||
      ringbuffer_len(rb) != sizeof(msg) ||
      ringbuffer_find(rb, "outside", 7) != 11 ||
      ringbuffer_read(rb, out, sizeof(out)) != sizeof(msg) ||
      memcmp(out, msg, sizeof(msg)) != 0 || !ringbuffer_empty(rb)) {
    fprintf(stderr, "ring buffer round trip failed\n");
    ringbuffer_free(rb);
    return 1;
  }
  ringbuffer_free(rb);
  puts("ok");
  return 0;
}
EOF

# shellcheck disable=SC2086 # $flags is a list of compiler arguments
"$cc" -std=c11 -Wall -Wextra -Werror "$tmp/app.c" $flags -o "$tmp/app" \
  >"$tmp/cc.log" 2>&1 || fail "compiling the app: $(cat "$tmp/cc.log")"

out=$(LD_LIBRARY_PATH=$libdir "$tmp/app" 2>&1) || fail "app: $out"
[ "$out" = ok ] || fail "app printed '$out'"
# Make sure it ran on the installed copy, not some other libgev.
if command -v ldd >/dev/null 2>&1; then
  deps=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/app")
  grep -q "=> $libdir/libgev\.so" <<<"$deps" \
    || fail "app did not load $libdir/libgev.so: $deps"
fi

# Exported symbols: only the public prefixes (hidden visibility elsewhere).
command -v nm >/dev/null 2>&1 || fail "nm not found (binutils)"
command -v readelf >/dev/null 2>&1 || fail "readelf not found (binutils)"
bad=$(nm -D --defined-only "$lib" | awk '{ print $NF }' \
  | grep -Ev '^(gev_|ringbuffer_)' \
  | grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' || true)
[ -z "$bad" ] || fail "unexpected exported symbols:"$'\n'"$bad"
nm -D --defined-only "$lib" | grep -q ' ringbuffer_new$' \
  || fail "ringbuffer_new is not exported"

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[[ $soname =~ ^libgev\.so\.[0-9]+$ ]] || fail "soname '$soname' has no version"
[ -e "$libdir/$soname" ] || fail "$soname is not installed next to libgev.so"

echo "install test: ok (soname $soname)"
