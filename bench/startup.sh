#!/usr/bin/env bash
# Start-up of one-shot commands and of the daemon, vdisk vs the QEMU tool, in one run:
#   --version                  vdisk --version                      vs qemu-img --version
#   info (qcow2)               vdisk info IMG.qcow2                  vs qemu-img info IMG.qcow2
#   io read 4k (raw, qcow2)    vdisk io -f FMT IMG -c 'read 0 4k'    vs qemu-io -f FMT IMG -c 'read 0 4k'
#   refused open               vdisk io -f raw IMG -c 'write 0 4k'   vs qemu-io, while a paused QEMU
#                              VM's virtio-blk device holds IMG (both fail with QEMU's lock error)
#   serve ready                vdisk serve ... until its NBD socket sends the greeting, vs
#                              qemu-storage-daemon with the same command line
# Whole-process times, medians of RUNS (default 150) alternating runs: a run takes a few ms, and
# with 40 the ratios moved by up to ±0.07 between runs; with 150-200 by ±0.02. Target: ratio <= 0.6.
#   RUNS=150  VDISK=bin/vdisk  BENCH_METRIC=wall|cpu
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-150}

qemu-img create -q -f raw "$work/img.raw" 64M
qemu-img create -q -f qcow2 "$work/img.qcow2" 64M
qemu-io -f qcow2 "$work/img.qcow2" -c 'write -P 0x5a 0 1M' >/dev/null

bench_compare "--version" "$runs" "" "$vdisk --version" "qemu-img --version"
bench_compare "info (qcow2)" "$runs" "" "$vdisk info $work/img.qcow2" "qemu-img info $work/img.qcow2"
bench_compare "io read 4k (raw)" "$runs" "" "$vdisk io -f raw $work/img.raw -c 'read 0 4k'" "qemu-io -f raw $work/img.raw -c 'read 0 4k'"
bench_compare "io read 4k (qcow2)" "$runs" "" "$vdisk io -f qcow2 $work/img.qcow2 -c 'read 0 4k'" "qemu-io -f qcow2 $work/img.qcow2 -c 'read 0 4k'"

# A paused VM holds the raw image as a guest disk does (it refuses other writers).
qemu-system-x86_64 -S -nodefaults -display none -machine pc,accel=tcg \
  -drive if=none,id=d0,file="$work/img.raw",format=raw -device virtio-blk-pci,drive=d0 2>/dev/null &
inode=$(stat -c %i "$work/img.raw")
for _ in $(seq 400); do
  grep -q ":$inode 201 201$" /proc/locks && break  # the unshared "write" byte: the device is realized
  sleep 0.05
done
for tool in "$vdisk io" qemu-io; do
  if err=$($tool -f raw "$work/img.raw" -c 'write 0 4k' 2>&1); then
    echo "refused open: $tool was not refused" >&2
    exit 1
  fi
  [[ "$err" == *'Failed to get "write" lock'* ]] || { echo "refused open: $tool: $err" >&2; exit 1; }
done
bench_compare "refused open (io write, VM holds image)" "$runs" "" "$vdisk io -f raw $work/img.raw -c 'write 0 4k'" "qemu-io -f raw $work/img.raw -c 'write 0 4k'"
bench_stop_daemons

serve_args="--blockdev driver=file,node-name=f,filename=$work/img.qcow2 --blockdev driver=qcow2,node-name=disk,file=f --nbd-server addr.type=unix,addr.path=$work/ready.sock --export type=nbd,id=e,node-name=disk"
bench_ready "serve ready (qcow2 export serving)" "$runs" "$work/ready.sock" "$vdisk serve $serve_args" "qemu-storage-daemon $serve_args"

bench_table
