#!/usr/bin/env bash
# vdisk vs qemu-img: convert from an NBD source (qemu-nbd serving a 1 GiB raw image holding
# 512 MiB of random data in 64 MiB pieces between 64 MiB holes, over a Unix socket) to a local
# qcow2 image. Medians of RUNS (default 5) alternating runs, one row (bench/lib.sh).
#   RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
command -v qemu-nbd >/dev/null || { echo "qemu-nbd not found: run scripts/setup.sh" >&2; exit 1; }

truncate -s 1G "$work/src.raw"
bench_random_file "$work/piece" 64
for i in 0 2 4 6 8 10 12 14; do
  dd if="$work/piece" of="$work/src.raw" bs=1M seek=$((i * 64)) conv=notrunc status=none
done
qemu-nbd -t -r -f raw -x src -k "$work/nbd.sock" "$work/src.raw" &
for _ in $(seq 300); do [[ -S "$work/nbd.sock" ]] && break; sleep 0.1; done
[[ -S "$work/nbd.sock" ]] || { echo "qemu-nbd did not start" >&2; exit 1; }
uri="nbd+unix:///src?socket=$work/nbd.sock"

bench_compare "convert nbd->qcow2 (1 GiB, half data)" "$runs" "$(bench_fresh_output "$work/o.qcow2")" \
  "$vdisk convert -O qcow2 $uri $work/o.qcow2" "qemu-img convert -O qcow2 $uri $work/o.qcow2"
# The copy must be right, or the timing means nothing.
qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"

bench_table
