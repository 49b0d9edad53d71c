#!/usr/bin/env bash
# Before/after for start-up work: bench/startup.sh's rows with two vdisk binaries and the QEMU tool
# in one alternating run per row (bench.py), so that all three see the same load. Prints
# bench.py's lines per row: "median-wall-ms median-cpu-ms min-wall-ms" for BEFORE, AFTER, QEMU.
#   bench/startup-ab.sh BEFORE-BINARY AFTER-BINARY      RUNS=150 (as bench/startup.sh)
source "$(dirname "$0")/lib.sh"
before=$(realpath "$1")
after=$(realpath "$2")
runs=${RUNS:-150}

qemu-img create -q -f raw "$work/img.raw" 64M
qemu-img create -q -f qcow2 "$work/img.qcow2" 64M
qemu-io -f qcow2 "$work/img.qcow2" -c 'write -P 0x5a 0 1M' >/dev/null

row() { echo "== $1"; python3 "$bench_py" time --runs "$runs" --warmup 2 "$before $2" "$after $2" "$3"; }
row "--version" "--version" "qemu-img --version"
row "info (qcow2)" "info $work/img.qcow2" "qemu-img info $work/img.qcow2"
row "io read 4k (raw)" "io -f raw $work/img.raw -c 'read 0 4k'" "qemu-io -f raw $work/img.raw -c 'read 0 4k'"
row "io read 4k (qcow2)" "io -f qcow2 $work/img.qcow2 -c 'read 0 4k'" "qemu-io -f qcow2 $work/img.qcow2 -c 'read 0 4k'"

# A paused VM holds the raw image as a guest disk does (as in bench/startup.sh).
qemu-system-x86_64 -S -nodefaults -display none -machine pc,accel=tcg \
  -drive if=none,id=d0,file="$work/img.raw",format=raw -device virtio-blk-pci,drive=d0 2>/dev/null &
inode=$(stat -c %i "$work/img.raw")
for _ in $(seq 400); do
  grep -q ":$inode 201 201$" /proc/locks && break
  sleep 0.05
done
row "refused open" "io -f raw $work/img.raw -c 'write 0 4k'" "qemu-io -f raw $work/img.raw -c 'write 0 4k'"
bench_stop_daemons

serve_args="--blockdev driver=file,node-name=f,filename=$work/img.qcow2 --blockdev driver=qcow2,node-name=disk,file=f --nbd-server addr.type=unix,addr.path=$work/ready.sock --export type=nbd,id=e,node-name=disk"
echo "== serve ready"
python3 "$bench_py" ready --runs "$((runs / 2))" --warmup 2 "$work/ready.sock" "$before serve $serve_args" "$after serve $serve_args" "qemu-storage-daemon $serve_args"
