#!/usr/bin/env bash
# Whole-process time of vdisk io vs qemu-io on the same raw image, side by side in one run:
#   1. open, read 4 KiB, close:   vdisk io -c 'read 0 4k'   vs  qemu-io -c 'read 0 4k'
#   2. a refused conflicting open (a paused QEMU virtio-blk device holds the image)
# Prints both mean times and the ratio vdisk/qemu (target: <= 1.0). Needs hyperfine and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
RUNS=${RUNS:-200}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
img="$dir/bench.raw"
qemu-img create -q -f raw "$img" 64M

measure() { # name, vdisk command, qemu command
  hyperfine -N --warmup 20 --runs "$RUNS" -i --export-json "$dir/$1.json" -n vdisk "$2" -n qemu "$3" >/dev/null
  python3 - "$1" "$dir/$1.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = {x["command"]: x for x in json.load(open(path))["results"]}
v, q = r["vdisk"]["mean"] * 1000, r["qemu"]["mean"] * 1000
print(f"{name:<28} vdisk {v:7.2f} ms   qemu {q:7.2f} ms   ratio {v / q:5.2f}")
PY
}

echo "vdisk: $($VDISK --version 2>/dev/null || echo "$VDISK")   qemu-io: $(qemu-io --version | head -1)"
measure "read 4k (open+read+close)" "$VDISK io -f raw $img -c 'read 0 4k'" "qemu-io -f raw $img -c 'read 0 4k'"

qemu-system-x86_64 -S -nodefaults -display none -machine pc \
  -drive if=none,id=d0,file="$img",format=raw -device virtio-blk-pci,drive=d0 &
for _ in $(seq 100); do grep -q " 201 " /proc/locks && break; sleep 0.05; done
sleep 0.2
measure "refused conflicting open" "$VDISK io -f raw $img -c 'write 0 4k'" "qemu-io -f raw $img -c 'write 0 4k'"
