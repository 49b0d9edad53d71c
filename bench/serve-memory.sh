#!/usr/bin/env bash
# Resident memory per image of a daemon holding many raw images open and locked, vdisk serve vs
# qemu-storage-daemon: each image gets a node (blockdev-add) and a writable NBD export (which
# takes its locks), over QMP. A row per count gives the VmRSS growth per image in KiB
# (target: <= 10 KiB).
#   COUNTS="1000 10000"  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
counts=${COUNTS:-1000 10000}
max=$(tr ' ' '\n' <<<"$counts" | sort -n | tail -1)
mkdir -p "$work/img"
(cd "$work/img" && seq -f "%g.raw" 0 $((max - 1)) | xargs truncate -s 1M)
ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# per_image PROGRAM COUNT: prints the RSS growth per image in KiB.
per_image() {
  local count=$2 pid before after
  local -a cmd
  if [[ "$1" == vdisk ]]; then cmd=("$vdisk" serve); else cmd=(qemu-storage-daemon); fi
  rm -f "$work/m.sock" "$work/n.sock"
  "${cmd[@]}" --nbd-server "addr.type=unix,addr.path=$work/n.sock" \
    --chardev "socket,id=m,path=$work/m.sock,server=on,wait=off" --monitor chardev=m &
  pid=$!
  for _ in $(seq 400); do [[ -S "$work/m.sock" ]] && break; sleep 0.05; done
  before=$(rss_kib $pid)
  python3 "$bench_py" qmp-fill "$work/m.sock" "$count" "$work/img"
  after=$(rss_kib $pid)
  kill $pid
  wait $pid 2>/dev/null || true
  awk -v a="$after" -v b="$before" -v n="$count" 'BEGIN { printf "%.2f", (a - b) / n }'
}

for count in $counts; do
  bench_row "RSS per held image ($count raw images)" "$(per_image vdisk "$count")" "$(per_image qsd "$count")" KiB "" 0 qemu-storage-daemon
done

bench_table
