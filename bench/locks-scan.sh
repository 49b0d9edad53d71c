#!/usr/bin/env bash
# Benchmark: `vdisk locks -r` over a directory of many small images of which some are held,
# next to `lslocks` on the same machine in the same run.
#
#   bench/locks-scan.sh [IMAGES [HELD]]        defaults: 10000 images, 1000 held
#
# The held images are opened by ONE helper process (tests/LockProbe hold-many) with OFD locks
# as a raw virtio-blk VM would take them (100,101 / 201), so vdisk has to attribute 1000 OFD
# locks (PID -1 in /proc/locks) to their descriptors. vdisk is the NativeAOT build
# ($VDISK_BIN, else published to artifacts/bench/). Target: vdisk under 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."

images=${1:-10000}
held=${2:-1000}
runs=${RUNS:-5}

if [[ -n "${VDISK_BIN:-}" ]]; then
  vdisk=$VDISK_BIN
else
  echo "Publishing vdisk (NativeAOT) to artifacts/bench/ ..." >&2
  dotnet publish src/Vdisk.Cli -c Release -r linux-x64 -p:PublishAot=true -p:SelfContained=true -o artifacts/bench/publish --nologo -v quiet >&2
  vdisk=artifacts/bench/publish/vdisk
fi
echo "Building tests/LockProbe ..." >&2
dotnet build tests/LockProbe -c Release --nologo -v quiet -o artifacts/bench/lockprobe >&2
probe=artifacts/bench/lockprobe/LockProbe

work=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-locks-bench.XXXXXX")
holder_pid=""
cleanup() {
  [[ -n "$holder_pid" ]] && kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "Creating $images images of 64 KiB in $work/images ..." >&2
mkdir -p "$work/images"
(cd "$work/images" && seq -f "disk%05g.img" 1 "$images" | xargs truncate -s 64K)

echo "Holding $held of them in one process ..." >&2
ulimit -n $((held + 1024))
mkfifo "$work/ready"
"$probe" hold-many "$work/images" "$held" read,write write >"$work/ready" 2>"$work/probe.err" &
holder_pid=$!
read -r line <"$work/ready" || { cat "$work/probe.err" >&2; exit 1; }
echo "LockProbe (PID $holder_pid): $line" >&2

# Sanity: vdisk finds every held image and names the holder.
summary=$("$vdisk" locks -r "$work/images" | tail -1)
echo "vdisk: $summary" >&2
[[ "$summary" == "$images file(s) examined: $held with locks, $((images - held)) without" ]] || { echo "unexpected summary" >&2; exit 1; }
"$vdisk" locks "$work/images/disk00001.img" | grep -q "^  $holder_pid " || { echo "holder not named" >&2; exit 1; }

# Median wall time in ms of "$@" over $runs runs (output discarded).
median_ms() {
  local times=() start end
  "$@" >/dev/null 2>&1 || true # warm-up (page cache, dentries)
  for ((i = 0; i < runs; i++)); do
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    end=$(date +%s%N)
    times+=($(((end - start) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}'
}

vdisk_ms=$(median_ms "$vdisk" locks -r "$work/images")
vdisk_json_ms=$(median_ms "$vdisk" locks -r --output json "$work/images")
lslocks_ms=$(median_ms lslocks)
lslocks_nopath_ms=$(median_ms lslocks -o COMMAND,PID,TYPE,MODE,START,END)

echo
echo "images: $images, held: $held (OFD locks: $(grep -c OFDLCK /proc/locks) lines in /proc/locks), median of $runs runs"
printf '%-40s %10s ms\n' "vdisk locks -r DIR" "$vdisk_ms"
printf '%-40s %10s ms\n' "vdisk locks -r --output json DIR" "$vdisk_json_ms"
printf '%-40s %10s ms\n' "lslocks" "$lslocks_ms"
printf '%-40s %10s ms\n' "lslocks -o (no PATH column)" "$lslocks_nopath_ms"
awk -v v="$vdisk_ms" -v l="$lslocks_ms" 'BEGIN { printf "ratio vdisk / lslocks: %.2f\n", v / l }'
awk -v v="$vdisk_ms" 'BEGIN { if (v < 1000) print "target (< 1000 ms): met"; else print "target (< 1000 ms): MISSED" }'
