#!/usr/bin/env bash
# One vdisk serve holding many raw images under cluster locks (3-member etcd on loopback):
# resident memory per image with and without cluster-lock-id, and the keep-alive traffic the
# daemon sends etcd while idle (one lease per process, so it does not grow with the images).
#   COUNTS="1 1000"  IDLE=20 (seconds of idle traffic measured)  VDISK=bin/vdisk  VDISK_ETCD_TTL=10
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
COUNTS=${COUNTS:-1 1000}
IDLE=${IDLE:-20}
dir=$(mktemp -d)
source bench/cluster-etcd.sh
trap 'kill $(jobs -p) 2>/dev/null || true; etcd_stop; rm -rf "$dir"' EXIT
etcd_start
max=$(echo $COUNTS | tr ' ' '\n' | sort -n | tail -1)
mkdir -p "$dir/img"
for i in $(seq 0 $((max - 1))); do : > "$dir/img/$i.raw"; truncate -s 1M "$dir/img/$i.raw"; done
ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

fill() { # qmp socket, image count, extra file options
  python3 - "$1" "$2" "$dir/img" "$3" <<'PY'
import socket, sys
path, count, images, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_UNIX); s.connect(path)
f = s.makefile("rwb", buffering=0)
f.readline()
def run(cmd):
    f.write(cmd.encode() + b"\n")
    while True:
        line = f.readline().decode()
        if '"event"' in line: continue
        if '"error"' in line: sys.exit("QMP error: " + line)
        return
run('{"execute":"qmp_capabilities"}')
for i in range(count):
    lock = (',"cluster-lock-id":"img%d"' % i) if extra == "cluster" else ""
    run('{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"n%d","file":{"driver":"file","filename":"%s/%d.raw"%s}}}' % (i, images, i, lock))
    run('{"execute":"block-export-add","arguments":{"type":"nbd","id":"e%d","node-name":"n%d","writable":true}}' % (i, i))
PY
}

measure() { # label (local|cluster), count
  local label=$1 count=$2
  rm -f "$dir/m.sock" "$dir/n.sock"
  "$VDISK" serve --nbd-server "addr.type=unix,addr.path=$dir/n.sock" --chardev "socket,id=m,path=$dir/m.sock,server=on,wait=off" --monitor chardev=m &
  local pid=$!
  for _ in $(seq 200); do [[ -S "$dir/m.sock" ]] && break; sleep 0.05; done
  sleep 0.5
  local before; before=$(rss_kib $pid)
  local t0; t0=$(date +%s.%N)
  fill "$dir/m.sock" "$count" "$label"
  local t1; t1=$(date +%s.%N)
  sleep 1
  local after; after=$(rss_kib $pid)
  printf "%-8s %5d images: RSS %7d -> %7d KiB, %6.2f KiB per image, %.2f ms per blockdev-add+export\n" \
    "$label" "$count" "$before" "$after" "$(echo "($after - $before) / $count" | bc -l)" "$(echo "($t1 - $t0) * 1000 / $count" | bc -l)"
  if [[ $label == cluster ]]; then
    local keys; keys=$(ETCDCTL_API=3 etcdctl --endpoints="$VDISK_ETCD_ENDPOINTS" get --prefix vdisk/v1/locks/ --keys-only | grep -c . || true)
    local m0 b0; m0=$(etcd_metric grpc_server_msg_received_total 'grpc_method="LeaseKeepAlive"'); b0=$(etcd_metric etcd_network_client_grpc_received_bytes_total '')
    sleep "$IDLE"
    local m1 b1; m1=$(etcd_metric grpc_server_msg_received_total 'grpc_method="LeaseKeepAlive"'); b1=$(etcd_metric etcd_network_client_grpc_received_bytes_total '')
    printf "         %5d images: %d keys in etcd; idle traffic to etcd: %.2f keep-alive messages/s, %.0f bytes/s (over %d s)\n" \
      "$count" "$keys" "$(echo "($m1 - $m0) / $IDLE" | bc -l)" "$(echo "($b1 - $b0) / $IDLE" | bc -l)" "$IDLE"
  fi
  kill $pid; wait $pid 2>/dev/null || true
}

echo "lease TTL ${VDISK_ETCD_TTL:-10} s"
for count in $COUNTS; do
  measure local "$count"
  measure cluster "$count"
done
