#!/usr/bin/env bash
# vdisk convert vs qemu-img convert, raw -> qcow2 and qcow2 -> raw, on a SIZE image (default
# 1 GiB) whose first half is random data and second half a hole. The floor is a sparse copy of
# the same source file (cp --sparse=always): the least any converter has to do (read the data,
# write it, skip the hole). Medians of RUNS (default 5) alternating runs of vdisk, qemu-img and
# cp. The targets are written with cache=unsafe, qemu-img convert's default: no flush, like cp.
#   SIZE=1024 (MiB)  RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
size=${SIZE:-1024}

bench_random_file "$work/src.raw" $((size / 2))
truncate -s "${size}M" "$work/src.raw"
qemu-img convert -O qcow2 "$work/src.raw" "$work/src.qcow2"
cat "$work/src.raw" "$work/src.qcow2" >/dev/null

bench_compare "convert raw->qcow2 ($size MiB, half data)" "$runs" "$(bench_fresh_output "$work/out")" \
  "$vdisk convert -O qcow2 $work/src.raw $work/out" "qemu-img convert -O qcow2 $work/src.raw $work/out" \
  "cp --sparse=always $work/src.raw $work/out"
bench_compare "convert qcow2->raw ($size MiB, half data)" "$runs" "$(bench_fresh_output "$work/out")" \
  "$vdisk convert -O raw $work/src.qcow2 $work/out" "qemu-img convert -O raw $work/src.qcow2 $work/out" \
  "cp --sparse=always $work/src.qcow2 $work/out"

bench_table
