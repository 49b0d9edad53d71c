#!/usr/bin/env bash
# vdisk vs qemu-img: convert raw->qcow2, qcow2->raw (1 GiB image, 512 MiB random data) and info.
# Usage: bench/convert-info.sh [vdisk-binary]   (default: NativeAOT publish into bin/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/bin/vdisk}
if [ ! -x "$vdisk" ]; then
  dotnet publish "$root/src/Vdisk.Cli" -c Release -r linux-x64 -p:SelfContained=true -o "$root/bin" >/dev/null
  vdisk=$root/bin/vdisk
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 512M /dev/urandom > "$work/src.raw"
truncate -s 1G "$work/src.raw"
qemu-img convert -O qcow2 "$work/src.raw" "$work/src.qcow2"

secs() { local t0 t1; t0=$(date +%s.%N); bash -c "$1" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
run() { # name vdisk-cmd qemu-cmd: best of 3 each
  local name=$1 v=999 q=999 t
  for _ in 1 2 3; do
    t=$(secs "$2"); v=$(printf '%s\n%s\n' "$v" "$t" | sort -g | head -1)
    t=$(secs "$3"); q=$(printf '%s\n%s\n' "$q" "$t" | sort -g | head -1)
  done
  printf '%-22s vdisk %6.3fs  qemu-img %6.3fs  ratio %.2f\n' "$name" "$v" "$q" "$(echo "$v / $q" | bc -l)"
}
if command -v hyperfine >/dev/null; then
  hyperfine -w 1 -r 5 -N \
    -p "rm -f $work/o.qcow2" -n "vdisk convert raw->qcow2" "$vdisk convert -O qcow2 $work/src.raw $work/o.qcow2" \
    -p "rm -f $work/o.qcow2" -n "qemu-img convert raw->qcow2" "qemu-img convert -O qcow2 $work/src.raw $work/o.qcow2" \
    -p "rm -f $work/o.raw" -n "vdisk convert qcow2->raw" "$vdisk convert -O raw $work/src.qcow2 $work/o.raw" \
    -p "rm -f $work/o.raw" -n "qemu-img convert qcow2->raw" "qemu-img convert -O raw $work/src.qcow2 $work/o.raw" \
    -p true -n "vdisk info" "$vdisk info $work/src.qcow2" -p true -n "qemu-img info" "qemu-img info $work/src.qcow2" \
    --export-markdown "$work/r.md" >/dev/null
  cat "$work/r.md"
fi
run "convert raw->qcow2" "rm -f $work/o.qcow2; $vdisk convert -O qcow2 $work/src.raw $work/o.qcow2" "rm -f $work/o.qcow2; qemu-img convert -O qcow2 $work/src.raw $work/o.qcow2"
run "convert qcow2->raw" "rm -f $work/o.raw; $vdisk convert -O raw $work/src.qcow2 $work/o.raw" "rm -f $work/o.raw; qemu-img convert -O raw $work/src.qcow2 $work/o.raw"
run "info" "$vdisk info $work/src.qcow2" "qemu-img info $work/src.qcow2"
