#!/usr/bin/env bash
# Acquire + release latency of a one-shot vdisk io read, with cluster locks (a 3-member etcd on
# loopback) and with local locks only, side by side in one run (qemu-io for reference):
# p50 and p99 of the whole process, open (lease grant, one etcd transaction for PREPARE) +
# read 4 KiB + close (one transaction for the release, lease revoke at exit).
#   RUNS=300  VDISK=bin/vdisk
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
RUNS=${RUNS:-300}
dir=$(mktemp -d)
source bench/cluster-etcd.sh
trap 'etcd_stop; rm -rf "$dir"' EXIT
etcd_start
img="$dir/bench.qcow2"
qemu-img create -q -f qcow2 "$img" 64M

hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$dir/r.json" \
  -n "vdisk io, local locks" "$VDISK io -f qcow2 $img -c 'read 0 4k'" \
  -n "vdisk io, cluster locks" "$VDISK io --image-opts driver=qcow2,file.driver=file,file.filename=$img,file.cluster-lock-id=bench -c 'read 0 4k'" \
  -n "qemu-io (reference)" "qemu-io -f qcow2 $img -c 'read 0 4k'" >/dev/null
python3 - "$dir/r.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(x * 1000 for x in r["times"])
    p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
    print(f"{r['command']:<26} p50 {p(0.50):7.2f} ms   p99 {p(0.99):7.2f} ms   ({len(t)} runs)")
PY
