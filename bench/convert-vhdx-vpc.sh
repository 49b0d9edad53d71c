#!/usr/bin/env bash
# vdisk vs qemu-img: convert -f vhdx|vpc -O qcow2 of a 1 GiB image holding 512 MiB of random data,
# as Hyper-V and Azure hand them over: vhdx dynamic and fixed, vpc (VHD) dynamic and fixed (with
# force_size, Azure's exact size), all made by qemu-img. Medians of RUNS (default 5) alternating
# runs per source, one row each (bench/lib.sh), as bench/convert-vmdk.sh does for vmdk.
#   RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}

bench_random_file "$work/src.raw" 512
truncate -s 1G "$work/src.raw"
sources=(vhdx:dynamic vhdx:fixed vpc:dynamic vpc:fixed)
for s in "${sources[@]}"; do
  fmt=${s%%:*} sub=${s#*:}
  opts="subformat=$sub"
  [[ $fmt == vpc ]] && opts+=",force_size=on"
  qemu-img convert -O "$fmt" -o "$opts" "$work/src.raw" "$work/$sub.$fmt"
done

for s in "${sources[@]}"; do
  fmt=${s%%:*} sub=${s#*:}
  bench_compare "convert $fmt ($sub)->qcow2 (1 GiB, half data)" "$runs" "$(bench_fresh_output "$work/o.qcow2")" \
    "$vdisk convert -f $fmt -O qcow2 $work/$sub.$fmt $work/o.qcow2" \
    "qemu-img convert -f $fmt -O qcow2 $work/$sub.$fmt $work/o.qcow2"
  # The copy must be right, or the timing means nothing.
  qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"
done

bench_table
