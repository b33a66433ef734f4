#!/usr/bin/env bash
# doxygen-test.sh DOXYFILE - run doxygen over the public headers with the
# build's configured Doxyfile (doc/Doxyfile.in) and fail on any warning:
# an undocumented function, parameter or return value (WARN_NO_PARAMDOC),
# a @param naming no parameter, a malformed command. Every header must have
# its @file block in doc/reference/groups.dox (doxygen checks nothing in an
# undocumented file). Struct fields documented with plain comments, and the
# headers listed in doxygen-pending.txt, are reported but not fatal.
# Exit 0 ok, 1 warnings, 77 (SKIP) when doxygen is not installed.
set -u
doxyfile=${1:?usage: doxygen-test.sh DOXYFILE}
if ! command -v doxygen >/dev/null 2>&1; then
  echo "SKIP: doxygen is not installed (Debian: apt-get install doxygen; .ci/run installs it)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  cat "$doxyfile"
  echo "OUTPUT_DIRECTORY = $tmp"
  echo "WARN_LOGFILE = $tmp/warnings.log"
} | doxygen - >"$tmp/out.log" 2>&1 || { cat "$tmp/out.log"; echo "FAIL: doxygen failed"; exit 1; }
# doxygen ignores the functions of a file without a @file block: each header
# in INPUT needs one in groups.dox, or nothing in it would be checked.
groups=$(grep -o '[^ ]*/groups\.dox' "$doxyfile" | head -1)
unfiled=
for h in $(grep -o '[^ ]*/include/gev/[A-Za-z0-9_-]*\.h' "$doxyfile"); do
  grep -q "^@file gev/$(basename "$h")\$" "$groups" || unfiled="$unfiled gev/$(basename "$h")"
done
if [ -n "$unfiled" ]; then
  echo "FAIL: no @file block in $groups for:$unfiled"
  exit 1
fi

fields='Member .* \(variable\) of struct .* is not documented'
notes=$(grep -Ec "$fields" "$tmp/warnings.log")
# A warning is one line, or a line and its indented continuation lines.
awk -v pending="$(dirname "$0")/doxygen-pending.txt" '
  BEGIN { while ((getline l < pending) > 0) if (l !~ /^#/ && l != "") skip[l] = 1 }
  /^[^ \t]/ { keep = 1; for (h in skip) if (index($0, "/include/" h ":")) keep = 0 }
  keep' "$tmp/warnings.log" >"$tmp/fatal.log"
fatal=$(grep -Ev "$fields" "$tmp/fatal.log" | grep -v '^[[:space:]]*$')
waived=$(grep -Ev "$fields" "$tmp/warnings.log" | grep -vxFf "$tmp/fatal.log" | grep '^[^ ]')
if [ -n "$waived" ]; then
  echo "note: $(wc -l <<<"$waived") warnings in the headers of doxygen-pending.txt (not fatal yet):"
  sed 's/^/  /' <<<"$waived"
fi
if [ -n "$fatal" ]; then
  echo "FAIL: doxygen warnings (document every parameter with @param and every return value with @return):"
  echo "$fatal"
  exit 1
fi
echo "ok: doxygen $(doxygen --version) reports no undocumented function, parameter or return value ($notes struct fields documented with plain comments, not fatal)"
