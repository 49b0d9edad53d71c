#!/usr/bin/env bash
# vdisk vs qemu-img: convert a 1 GiB luks image (aes-256-xts-plain64, qemu-img's default cipher)
# holding 512 MiB of random data and 512 MiB of zeroes to qcow2, with the same command line for
# both (--object secret, --image-opts). The key slot is made with iter-time=10 so that the time
# measured is the data path (reading and decrypting all of it: luks has no block status), not
# the PBKDF2 of the key slot, a fixed cost per open (2 s with the default iter-time).
# Medians of RUNS (default 5) alternating runs, one row (bench/lib.sh).
#   RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}

secret="secret,id=s0,data=bench-passphrase"
bench_random_file "$work/src.raw" 512
truncate -s 1G "$work/src.raw"
# The whole image is written, the zeroes too: a luks payload never written decrypts to noise, not zeroes.
qemu-img create -q -f luks --object "$secret" -o key-secret=s0,iter-time=10 "$work/src.luks" 1G
qemu-img convert -n --object "$secret" -f raw "$work/src.raw" \
  --target-image-opts "driver=luks,key-secret=s0,file.filename=$work/src.luks"
src_opts="driver=luks,key-secret=s0,file.filename=$work/src.luks"

bench_compare "convert luks->qcow2 (1 GiB, half data)" "$runs" "rm -f $work/o.qcow2" \
  "$vdisk convert --object $secret --image-opts $src_opts -O qcow2 $work/o.qcow2" \
  "qemu-img convert --object $secret --image-opts $src_opts -O qcow2 $work/o.qcow2"
# The copy must be right, or the timing means nothing.
qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"

bench_table
