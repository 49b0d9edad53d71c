#!/usr/bin/env bash
# vdisk vs qemu-img: convert a 1 GiB luks image holding 512 MiB of random data and 512 MiB of
# zeroes to qcow2, with the same command line for both (--object secret, --image-opts): one made
# with qemu-img's default cipher (aes-256-xts-plain64) and one with aes-256-cbc-essiv:sha256
# (older cryptsetup LUKS1 volumes). The key slots are made with iter-time=10 so that the time
# measured is the data path (reading and decrypting all of it: luks has no block status), not
# the PBKDF2 of the key slot, a fixed cost per open (2 s with the default iter-time).
# Medians of RUNS (default 5) alternating runs, one row per cipher (bench/lib.sh).
#   RUNS=5  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}

secret="secret,id=s0,data=bench-passphrase"
bench_random_file "$work/src.raw" 512
truncate -s 1G "$work/src.raw"
for variant in xts:cipher-mode=xts cbc-essiv:cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256; do
  name=${variant%%:*} options=${variant#*:}
  # The whole image is written, the zeroes too: a luks payload never written decrypts to noise, not zeroes.
  # qemu-img's PBKDF2 calibration fails now and then on a busy machine ("Unable to get accurate CPU usage"): retried.
  for try in 1 2 3 4 5; do
    qemu-img create -q -f luks --object "$secret" -o "key-secret=s0,iter-time=10,cipher-alg=aes-256,$options" "$work/$name.luks" 1G && break
    ((try < 5)) || exit 1
  done
  qemu-img convert -n --object "$secret" -f raw "$work/src.raw" \
    --target-image-opts "driver=luks,key-secret=s0,file.filename=$work/$name.luks"
  src_opts="driver=luks,key-secret=s0,file.filename=$work/$name.luks"
  bench_compare "convert luks ($name)->qcow2 (1 GiB, half data)" "$runs" "$(bench_fresh_output "$work/o.qcow2")" \
    "$vdisk convert --object $secret --image-opts $src_opts -O qcow2 $work/o.qcow2" \
    "qemu-img convert --object $secret --image-opts $src_opts -O qcow2 $work/o.qcow2"
  # The copy must be right, or the timing means nothing.
  qemu-img compare -q -f qcow2 -F raw "$work/o.qcow2" "$work/src.raw"
done

bench_table
