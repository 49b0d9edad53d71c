#!/usr/bin/env bash
# Throughput of vdisk serve vs qemu-storage-daemon, side by side in one run: nbdcopy reads a
# SIZE image (default 1 GiB of random data) out of an export and writes one into an export, raw
# and qcow2. Both daemons get the same command line. Medians of RUNS (default 5) alternating
# runs; the rows give MiB/s (ratio = qsd's rate / vdisk's: below 1, vdisk is faster).
#   SIZE=1024 (MiB)  RUNS=5  FORMATS="raw qcow2"  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
size=${SIZE:-1024}

bench_random_file "$work/source.raw" "$size"

# rate LABEL VDISK-CMD QSD-CMD: MiB/s from the median times.
rate() {
  local out vw qw
  out=$(python3 "$bench_py" time --runs "$runs" --warmup 1 "$2" "$3")
  vw=$(sed -n 1p <<<"$out" | cut -d' ' -f1)
  qw=$(sed -n 2p <<<"$out" | cut -d' ' -f1)
  bench_row "$1" "$(awk -v s="$size" -v t="$vw" 'BEGIN { printf "%.0f", s * 1000 / t }')" \
    "$(awk -v s="$size" -v t="$qw" 'BEGIN { printf "%.0f", s * 1000 / t }')" MiB/s "" 1 qemu-storage-daemon
}

for format in ${FORMATS:-raw qcow2}; do
  for side in v q; do
    qemu-img convert -q -f raw -O "$format" "$work/source.raw" "$work/read-$side.img"
    qemu-img create -q -f "$format" "$work/write-$side.img" "${size}M"
  done
  bench_serve vdisk vr "$work/read-v.img" "$format" off
  bench_serve qsd qr "$work/read-q.img" "$format" off
  bench_serve vdisk vw "$work/write-v.img" "$format" on
  bench_serve qsd qw "$work/write-q.img" "$format" on
  cat "$work/source.raw" "$work/read-v.img" "$work/read-q.img" >/dev/null
  rate "nbdcopy out ($format, $size MiB)" "nbdcopy nbd+unix:///disk?socket=$work/vr.sock null:" "nbdcopy nbd+unix:///disk?socket=$work/qr.sock null:"
  rate "nbdcopy in ($format, $size MiB)" "nbdcopy $work/source.raw nbd+unix:///disk?socket=$work/vw.sock" "nbdcopy $work/source.raw nbd+unix:///disk?socket=$work/qw.sock"
  bench_stop_daemons
  rm -f "$work"/read-* "$work"/write-*
done

bench_table
