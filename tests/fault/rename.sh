#!/bin/sh
# rename.sh SYMS IN.a OUT.a - OUT.a is IN.a (meson makes thin archives,
# which objcopy cannot copy) with every object's references renamed as
# SYMS says (objcopy --redefine-syms: "old new" per line).
set -eu
syms=$1 in=$2 out=$3
tmp=$out.d
rm -rf "$tmp" "$out"
mkdir -p "$tmp"
dir=$(dirname "$in")
i=0
for m in $(ar t "$in"); do
  case $m in /*) src=$m ;; *) src=$dir/$m ;; esac
  [ -f "$src" ] || src=$m
  i=$((i + 1))
  objcopy --redefine-syms="$syms" "$src" "$tmp/$i-$(basename "$m")"
done
ar rcs "$out" "$tmp"/*.o
rm -rf "$tmp"
