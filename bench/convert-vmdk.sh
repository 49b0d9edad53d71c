#!/usr/bin/env bash
# vdisk vs qemu-img: convert -f vmdk -O qcow2 of a 1 GiB image holding 512 MiB of random data,
# from the vmdk subformats people bring: monolithicSparse (the headline), streamOptimized (OVAs,
# compressed grains) and monolithicFlat (descriptor and flat extent), all made by qemu-img.
# Prints, for each measurement, the median wall time of vdisk and of qemu-img and their ratio
# (vdisk / qemu-img; below 1 means vdisk is faster). The two tools are measured in alternating
# rounds so that load from other processes on the machine hits both alike.
# Usage: bench/convert-vmdk.sh [vdisk-binary]   (default: bin/vdisk, the NativeAOT build of scripts/setup.sh)
# Environment: ROUNDS (default 3) rounds of RUNS (default 5) timed runs per tool and measurement.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${1:-$root/bin/vdisk}
rounds=${ROUNDS:-3}
runs=${RUNS:-5}
if [ ! -x "$vdisk" ]; then
  echo "Building $vdisk (NativeAOT)..." >&2
  dotnet publish "$root/src/Vdisk.Cli" -c Release -r linux-x64 -p:PublishAot=true -o "$root/artifacts/publish" --nologo -v quiet >/dev/null
  mkdir -p "$(dirname "$vdisk")"
  cp "$root/artifacts/publish/vdisk" "$vdisk"
fi
command -v qemu-img >/dev/null || { echo "qemu-img not found: run scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 512M /dev/urandom > "$work/src.raw"
truncate -s 1G "$work/src.raw"
for sub in monolithicSparse streamOptimized monolithicFlat; do
  qemu-img convert -O vmdk -o subformat=$sub "$work/src.raw" "$work/$sub.vmdk"
done

# time_once CMD: wall seconds of one run (fallback when hyperfine is missing).
time_once() { local t0 t1; t0=$(date +%s%N); bash -c "$1" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }

# measure NAME PREPARE VDISK-CMD QEMU-CMD: appends "tool microseconds" lines to $work/NAME.times
measure() {
  local name=$1 prepare=$2 v=$3 q=$4
  local out=$work/$name.times
  : > "$out"
  for _ in $(seq "$rounds"); do
    if command -v hyperfine >/dev/null; then
      hyperfine -N -w 1 -r "$runs" --export-json "$work/h.json" \
        -p "$prepare" -n vdisk "$v" -p "$prepare" -n qemu-img "$q" >/dev/null 2>&1
      # Per-run times from hyperfine's JSON, without needing jq.
      tr -d ' \n' < "$work/h.json" | grep -o '"command":"[^"]*"\|"times":\[[^]]*\]' | paste -d' ' - - |
        sed 's/"command":"\([^"]*\)" "times":\[\(.*\)\]/\1 \2/' |
        awk '{ n = split($2, t, ","); for (i = 1; i <= n; i++) printf "%s %d\n", $1, t[i] * 1e6 }' >> "$out"
    else
      for _ in $(seq "$runs"); do
        bash -c "$prepare"; echo "vdisk $(time_once "$v")" >> "$out"
        bash -c "$prepare"; echo "qemu-img $(time_once "$q")" >> "$out"
      done
    fi
  done
}

median() { grep "^$1 " "$2" | awk '{print $2}' | sort -n | awk '{a[NR] = $1} END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

report() {
  local name=$1 label=$2 v q
  v=$(median vdisk "$work/$name.times"); q=$(median qemu-img "$work/$name.times")
  awk -v l="$label" -v v="$v" -v q="$q" 'BEGIN { printf "%-36s vdisk %8.1f ms   qemu-img %8.1f ms   ratio %.2f\n", l, v / 1000, q / 1000, v / q }'
}

for sub in monolithicSparse streamOptimized monolithicFlat; do
  measure $sub "rm -f $work/o.qcow2" "$vdisk convert -f vmdk -O qcow2 $work/$sub.vmdk $work/o.qcow2" \
    "qemu-img convert -f vmdk -O qcow2 $work/$sub.vmdk $work/o.qcow2"
done
echo "median of $((rounds * runs)) runs each:"
for sub in monolithicSparse streamOptimized monolithicFlat; do
  report $sub "convert -f vmdk ($sub) -O qcow2"
done
