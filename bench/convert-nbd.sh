#!/usr/bin/env bash
# vdisk vs qemu-img: convert from an NBD source (qemu-nbd serving a 1 GiB raw image holding
# 512 MiB of random data, over a Unix socket) to a local qcow2 image. Prints the median wall
# time of each tool and their ratio (vdisk / qemu-img; below 1 means vdisk is faster). The two
# tools run in alternating rounds so that load from other processes hits both alike.
# Usage: bench/convert-nbd.sh [vdisk-binary]   (default: bin/vdisk, the NativeAOT build of scripts/setup.sh)
# Environment: ROUNDS (default 3) rounds of RUNS (default 3) timed runs per tool.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/bin/vdisk}
rounds=${ROUNDS:-3}
runs=${RUNS:-3}
if [ ! -x "$vdisk" ]; then
  echo "Building $vdisk (NativeAOT)..." >&2
  dotnet publish "$root/src/Vdisk.Cli" -c Release -r linux-x64 -p:PublishAot=true -o "$root/artifacts/publish" --nologo -v quiet >/dev/null
  mkdir -p "$(dirname "$vdisk")"
  cp "$root/artifacts/publish/vdisk" "$vdisk"
fi
command -v qemu-nbd >/dev/null || { echo "qemu-nbd not found: run scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# 512 MiB of data in 64 MiB pieces with 64 MiB holes between them, in a 1 GiB file.
truncate -s 1G "$work/src.raw"
for i in 0 2 4 6 8 10 12 14; do
  head -c 64M /dev/urandom | dd of="$work/src.raw" bs=1M seek=$((i * 64)) conv=notrunc status=none
done
qemu-nbd -t -r -f raw -x src -k "$work/nbd.sock" "$work/src.raw" &
server=$!
for _ in $(seq 300); do [ -S "$work/nbd.sock" ] && break; sleep 0.1; done
uri="nbd+unix:///src?socket=$work/nbd.sock"

: > "$work/times"
for _ in $(seq "$rounds"); do
  for _ in $(seq "$runs"); do
    for tool in vdisk qemu-img; do
      rm -f "$work/o.qcow2"
      cmd=$([ "$tool" = vdisk ] && echo "$vdisk" || echo qemu-img)
      t0=$(date +%s%N)
      "$cmd" convert -O qcow2 "$uri" "$work/o.qcow2"
      t1=$(date +%s%N)
      echo "$tool $(( (t1 - t0) / 1000 ))" >> "$work/times"
    done
  done
done
# The copy must be right, or the timing means nothing.
qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"

median() { grep "^$1 " "$work/times" | awk '{print $2}' | sort -n | awk '{a[NR] = $1} END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
v=$(median vdisk); q=$(median qemu-img)
awk -v v="$v" -v q="$q" 'BEGIN { printf "%-20s vdisk %8.1f ms   qemu-img %8.1f ms   ratio %.2f\n", "convert nbd->qcow2", v / 1000, q / 1000, v / q }'
