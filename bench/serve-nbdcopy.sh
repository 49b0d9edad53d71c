#!/usr/bin/env bash
# Throughput of vdisk serve vs qemu-storage-daemon, side by side in one run: nbdcopy reads a
# 1 GiB image out of an export and writes one into an export (raw; qcow2 too once vdisk has
# the driver). Both daemons get the same arguments. Prints mean times, MiB/s and the ratio
# vdisk/qsd of the times (target: <= 1.0, aim 0.9). Needs hyperfine, nbdcopy and python3.
#   SIZE=1024 (MiB)  RUNS=5  VDISK=bin/vdisk
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
RUNS=${RUNS:-5}
SIZE=${SIZE:-1024}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

python3 - "$dir/source.raw" "$SIZE" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    block = os.urandom(1 << 20)
    for i in range(int(sys.argv[2])):
        f.write(block[i % 251:] + block[:i % 251])
PY
cat "$dir/source.raw" > /dev/null

vdisk_serve() { exec "$VDISK" serve "$@"; }

serve() { # program, name, image, format, writable -> starts a daemon exporting the image as "disk"
  local program=$1 name=$2 image=$3 format=$4 writable=$5
  "$program" --blockdev "driver=file,node-name=f,filename=$image" --blockdev "driver=$format,node-name=disk,file=f" \
    --nbd-server "addr.type=unix,addr.path=$dir/$name.sock" --export "type=nbd,id=e,node-name=disk,writable=$writable" \
    --chardev "socket,id=m,path=$dir/$name.qmp,server=on,wait=off" --monitor chardev=m &
  for _ in $(seq 200); do [[ -S "$dir/$name.qmp" ]] && return; sleep 0.05; done
  echo "$name did not start" >&2; exit 1
}

measure() { # label, vdisk command, qsd command
  hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$dir/r.json" -n vdisk "$2" -n qsd "$3" >/dev/null
  python3 - "$1" "$dir/r.json" "$SIZE" <<'PY'
import json, sys
label, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = {x["command"]: x["mean"] for x in json.load(open(path))["results"]}
v, q = r["vdisk"], r["qsd"]
print(f"{label:<24} vdisk {v:6.3f} s {size / v:7.0f} MiB/s   qsd {q:6.3f} s {size / q:7.0f} MiB/s   ratio {v / q:4.2f}")
PY
}

formats=(raw)
probe=$("$VDISK" serve --blockdev "driver=qcow2,node-name=q,file.driver=file,file.filename=/nonexistent" 2>&1 || true)
if [[ "$probe" == *"Could not open"* ]]; then
  formats+=(qcow2)
fi

echo "vdisk: $VDISK   $(qemu-storage-daemon --version | head -1)   nbdcopy $(nbdcopy --version | head -1 | awk '{print $2}')   ${SIZE} MiB"
for format in "${formats[@]}"; do
  for side in v q; do
    qemu-img convert -q -f raw -O "$format" "$dir/source.raw" "$dir/read-$side.img"
    qemu-img create -q -f "$format" "$dir/write-$side.img" "${SIZE}M"
  done
  serve vdisk_serve vr "$dir/read-v.img" "$format" off
  serve qemu-storage-daemon qr "$dir/read-q.img" "$format" off
  serve vdisk_serve vw "$dir/write-v.img" "$format" on
  serve qemu-storage-daemon qw "$dir/write-q.img" "$format" on
  cat "$dir/read-v.img" "$dir/read-q.img" > /dev/null
  measure "$format: read (nbdcopy out)" "nbdcopy nbd+unix:///disk?socket=$dir/vr.sock null:" "nbdcopy nbd+unix:///disk?socket=$dir/qr.sock null:"
  measure "$format: write (nbdcopy in)" "nbdcopy $dir/source.raw nbd+unix:///disk?socket=$dir/vw.sock" "nbdcopy $dir/source.raw nbd+unix:///disk?socket=$dir/qw.sock"
  kill $(jobs -p); wait 2>/dev/null || true
  rm -f "$dir"/*.sock "$dir"/*.qmp "$dir"/read-* "$dir"/write-*
done
