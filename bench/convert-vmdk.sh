#!/usr/bin/env bash
# vdisk vs qemu-img: convert -f vmdk -O qcow2 of a 1 GiB image holding 512 MiB of random data,
# from the vmdk subformats people bring: monolithicSparse (the headline), streamOptimized (OVAs,
# compressed grains) and monolithicFlat (descriptor and flat extent), all made by qemu-img.
# Medians of RUNS (default 5) alternating runs per subformat, one row each (bench/lib.sh).
#   RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}

bench_random_file "$work/src.raw" 512
truncate -s 1G "$work/src.raw"
for sub in monolithicSparse streamOptimized monolithicFlat; do
  qemu-img convert -O vmdk -o subformat=$sub "$work/src.raw" "$work/$sub.vmdk"
done

for sub in monolithicSparse streamOptimized monolithicFlat; do
  bench_compare "convert vmdk ($sub)->qcow2 (1 GiB, half data)" "$runs" "$(bench_fresh_output "$work/o.qcow2")" \
    "$vdisk convert -f vmdk -O qcow2 $work/$sub.vmdk $work/o.qcow2" \
    "qemu-img convert -f vmdk -O qcow2 $work/$sub.vmdk $work/o.qcow2"
  # The copy must be right, or the timing means nothing.
  qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"
done

bench_table
