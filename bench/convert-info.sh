#!/usr/bin/env bash
# vdisk vs qemu-img: convert raw->qcow2, qcow2->raw (1 GiB image, 512 MiB random data) and info.
# Usage: bench/convert-info.sh [vdisk-binary]   (default: NativeAOT publish into bin/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/bin/vdisk}
if [ ! -x "$vdisk" ]; then
  dotnet publish "$root/src/Vdisk.Cli" -c Release -o "$root/bin" >/dev/null
  vdisk=$root/bin/vdisk
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 512M /dev/urandom > "$work/src.raw"
truncate -s 1G "$work/src.raw"
qemu-img convert -O qcow2 "$work/src.raw" "$work/src.qcow2"

run() { # name vdisk-cmd qemu-cmd
  local name=$1; shift
  local v q
  v=$( { /usr/bin/time -f %e bash -c "$1" >/dev/null 2>/dev/null; } 2>&1 | tail -1)
  q=$( { /usr/bin/time -f %e bash -c "$2" >/dev/null 2>/dev/null; } 2>&1 | tail -1)
  # best of 3
  for _ in 1 2; do
    v=$(printf '%s\n' "$v" "$( { /usr/bin/time -f %e bash -c "$1" >/dev/null 2>/dev/null; } 2>&1 | tail -1)" | sort -n | head -1)
    q=$(printf '%s\n' "$q" "$( { /usr/bin/time -f %e bash -c "$2" >/dev/null 2>/dev/null; } 2>&1 | tail -1)" | sort -n | head -1)
  done
  printf '%-22s vdisk %6.3fs  qemu-img %6.3fs  ratio %.2f\n' "$name" "$v" "$q" "$(echo "$v / $q" | bc -l)"
}
if command -v hyperfine >/dev/null; then
  hyperfine -w 1 -r 5 -N \
    -p "rm -f $work/o.qcow2" -n "vdisk convert raw->qcow2" "$vdisk convert -O qcow2 $work/src.raw $work/o.qcow2" \
    -p "rm -f $work/o.qcow2" -n "qemu-img convert raw->qcow2" "qemu-img convert -O qcow2 $work/src.raw $work/o.qcow2" \
    -p "rm -f $work/o.raw" -n "vdisk convert qcow2->raw" "$vdisk convert -O raw $work/src.qcow2 $work/o.raw" \
    -p "rm -f $work/o.raw" -n "qemu-img convert qcow2->raw" "qemu-img convert -O raw $work/src.qcow2 $work/o.raw" \
    -n "vdisk info" "$vdisk info $work/src.qcow2" -n "qemu-img info" "qemu-img info $work/src.qcow2" \
    --export-markdown "$work/r.md" >/dev/null
  cat "$work/r.md"
fi
run "convert raw->qcow2" "rm -f $work/o.qcow2; $vdisk convert -O qcow2 $work/src.raw $work/o.qcow2" "rm -f $work/o.qcow2; qemu-img convert -O qcow2 $work/src.raw $work/o.qcow2"
run "convert qcow2->raw" "rm -f $work/o.raw; $vdisk convert -O raw $work/src.qcow2 $work/o.raw" "rm -f $work/o.raw; qemu-img convert -O raw $work/src.qcow2 $work/o.raw"
run "info" "$vdisk info $work/src.qcow2" "qemu-img info $work/src.qcow2"
