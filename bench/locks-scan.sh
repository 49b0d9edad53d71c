#!/usr/bin/env bash
# `vdisk locks -r` over a directory of many small images of which some are held, next to
# `lslocks` (the rows' floor: there is no QEMU peer) on the same machine in the same run.
#
#   bench/locks-scan.sh [IMAGES [HELD]]        defaults: 10000 images, 1000 held
#
# The held images are opened by ONE helper process (tests/LockProbe hold-many) with OFD locks
# as a raw virtio-blk VM would take them (100,101 / 201), so vdisk has to attribute 1000 OFD
# locks (PID -1 in /proc/locks) to their descriptors. Medians of RUNS (default 5) alternating
# runs. Target: vdisk under 1 s.
source "$(dirname "$0")/lib.sh"
images=${1:-10000}
held=${2:-1000}
runs=${RUNS:-5}

echo "Building tests/LockProbe ..." >&2
dotnet build tests/LockProbe -c Release --nologo -v quiet -o artifacts/bench/lockprobe >&2
probe=$bench_root/artifacts/bench/lockprobe/LockProbe

mkdir -p "$work/images"
(cd "$work/images" && seq -f "disk%05g.img" 1 "$images" | xargs truncate -s 64K)

ulimit -n $((held + 1024))
mkfifo "$work/ready"
"$probe" hold-many "$work/images" "$held" read,write write >"$work/ready" 2>"$work/probe.err" &
holder_pid=$!
read -r line <"$work/ready" || { cat "$work/probe.err" >&2; exit 1; }
echo "LockProbe (PID $holder_pid): $line" >&2

# Sanity: vdisk finds every held image and names the holder.
summary=$("$vdisk" locks -r "$work/images" | tail -1)
[[ "$summary" == "$images file(s) examined: $held with locks, $((images - held)) without" ]] || { echo "unexpected summary: $summary" >&2; exit 1; }
"$vdisk" locks "$work/images/disk00001.img" | grep -q "^  $holder_pid " || { echo "holder not named" >&2; exit 1; }

# locks_row LABEL VDISK-CMD FLOOR-CMD: no QEMU program inspects locks, so the row has no peer.
# lslocks (util-linux) is its floor: it reads the same kernel lock table and names the holding
# processes, but walks no directory, looks at no image and attributes no OFD lock to a descriptor.
locks_row() {
  local out vw vc fw fc
  out=$(python3 "$bench_py" time --runs "$runs" --warmup 2 "$2" "$3")
  read -r vw vc _ <<<"$(sed -n 1p <<<"$out")"
  read -r fw fc _ <<<"$(sed -n 2p <<<"$out")"
  bench_row "$1" "$(bench_pick "$vw" "$vc")" "" ms "$(bench_pick "$fw" "$fc")"
}
locks_row "locks -r ($images images, $held held; floor: lslocks)" "$vdisk locks -r $work/images" "lslocks"
locks_row "locks -r --output json ($images images; floor: lslocks --json)" "$vdisk locks -r --output json $work/images" "lslocks --json"

bench_table
