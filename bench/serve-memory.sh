#!/usr/bin/env bash
# Resident memory per image of a daemon holding many raw images open and locked, vdisk serve
# vs qemu-storage-daemon: each image gets a node (blockdev-add) and a writable NBD export
# (which takes its locks), over QMP. Prints the VmRSS growth per image (target: <= 10 KiB).
#   COUNTS="1000 10000"  VDISK=bin/vdisk
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
COUNTS=${COUNTS:-1000 10000}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
max=$(echo $COUNTS | tr ' ' '\n' | sort -n | tail -1)
mkdir -p "$dir/img"
for i in $(seq 0 $((max - 1))); do : > "$dir/img/$i.raw"; truncate -s 1M "$dir/img/$i.raw"; done
ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

fill() { # qmp socket, image count: adds nodes and exports, then prints when done
  python3 - "$1" "$2" "$dir/img" <<'PY'
import socket, sys
path, count, images = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
    run('{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"n%d","file":{"driver":"file","filename":"%s/%d.raw"}}}' % (i, images, i))
    run('{"execute":"block-export-add","arguments":{"type":"nbd","id":"e%d","node-name":"n%d","writable":true}}' % (i, i))
PY
}

measure() { # label, program..., count
  local label=$1 count=$2; shift 2
  rm -f "$dir/m.sock" "$dir/n.sock"
  "$@" --nbd-server "addr.type=unix,addr.path=$dir/n.sock" --chardev "socket,id=m,path=$dir/m.sock,server=on,wait=off" --monitor chardev=m &
  local pid=$!
  for _ in $(seq 200); do [[ -S "$dir/m.sock" ]] && break; sleep 0.05; done
  sleep 0.5
  local before; before=$(rss_kib $pid)
  fill "$dir/m.sock" "$count"
  sleep 1
  local after; after=$(rss_kib $pid)
  local locked; locked=$(grep -c "OFDLCK" /proc/locks || true)
  printf "%-6s %6d images: RSS %7d KiB -> %7d KiB, %6.2f KiB per image (%d OFD locks in /proc/locks)\n" \
    "$label" "$count" "$before" "$after" "$(echo "($after - $before) / $count" | bc -l)" "$locked"
  kill $pid; wait $pid 2>/dev/null || true
}

for count in $COUNTS; do
  measure vdisk "$count" "$VDISK" serve
  [[ -n "${SKIP_QSD:-}" ]] || measure qsd "$count" qemu-storage-daemon
done
