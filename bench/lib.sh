# shellcheck shell=bash
# Shared by the bench/*.sh scripts (source it; it sets -euo pipefail and cds to the repository).
#
# Every script measures vdisk and its QEMU peer side by side in one run and reports rows with
# bench_row. Run alone, a script prints its own table at the end; under bench/all.sh the rows go
# to $BENCH_ROWS and all.sh prints one table for everything.
#
# Environment: VDISK (default: bin/vdisk, the NativeAOT build of scripts/setup.sh; built here when
# missing), BENCH_METRIC=wall|cpu (start-up rows: median wall time, the default, or median
# user+system time of the process, steadier when other processes load the machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_root=$PWD
bench_py=$bench_root/bench/bench.py

vdisk=${VDISK:-${VDISK_BIN:-$bench_root/bin/vdisk}}
if [[ ! -x "$vdisk" ]]; then
  echo "Building $vdisk (NativeAOT, as scripts/setup.sh does)..." >&2
  dotnet publish "$bench_root/src/Vdisk.Cli" -c Release -r linux-x64 -p:PublishAot=true -o "$bench_root/artifacts/publish" --nologo -v quiet >&2
  mkdir -p "$(dirname "$vdisk")"
  cp "$bench_root/artifacts/publish/vdisk" "$vdisk"
fi
vdisk=$(realpath "$vdisk")

# One scratch directory per script; background jobs (daemons, holders) end with the script.
work=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench.XXXXXX")
bench_cleanup() {
  local pids
  pids=$(jobs -p)
  if [[ -n "$pids" ]]; then
    kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap bench_cleanup EXIT

# Rows go to $BENCH_ROWS when all.sh collects them, else to this script's own file.
bench_own_table=0
if [[ -z "${BENCH_ROWS:-}" ]]; then
  BENCH_ROWS=$work/rows
  : > "$BENCH_ROWS"
  bench_own_table=1
fi

# bench_row LABEL VDISK PEER UNIT [FLOOR [RATE [PEER-NAME]]]   (PEER empty: a row without a peer)
#   RATE=1 for rates (higher is better: the ratio is then PEER/VDISK, so that below 1 still
#   means vdisk is better); PEER-NAME names the peer program (default: the QEMU tool).
bench_row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-0}" "${7:-qemu}" >> "$BENCH_ROWS"
  printf '%-44s vdisk %10s %s%s%s\n' "$1" "$2" "$4" "${3:+   ${7:-qemu} $3 $4}" "${5:+   floor $5 $4}" >&2
}

# bench_table: the table of this script's rows (when run alone).
bench_table() {
  if ((bench_own_table)); then
    echo
    bench_header
    python3 "$bench_py" table "$BENCH_ROWS"
  fi
}

bench_header() {
  echo "vdisk $("$vdisk" --version | head -1), $(qemu-img --version | head -1); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ratio = vdisk / peer (time, memory; for rates peer / vdisk): below 1 means vdisk is better"
}

# bench_pick WALL CPU: the number BENCH_METRIC asks for.
bench_pick() { if [[ "${BENCH_METRIC:-wall}" == cpu ]]; then echo "$2"; else echo "$1"; fi; }

# bench_fresh_output FILE: the PREPARE step of a row that writes FILE: FILE removed, and nothing
#   left dirty. The previous run's output still being written back slowed whichever tool ran
#   next (streamOptimized vmdk: 890 ms for both tools; after a sync, 466 vs 1441 ms).
bench_fresh_output() { echo "rm -f $1; sync"; }

# bench_compare LABEL RUNS PREPARE VDISK-CMD PEER-CMD [FLOOR-CMD]
#   Alternating runs (bench.py time), median milliseconds, one row (the peer is named by the
#   first word of its command).
bench_compare() {
  local label=$1 runs=$2 prepare=$3 v=$4 p=$5 floor=${6:-} name=${5%% *}
  local out
  out=$(python3 "$bench_py" time --runs "$runs" --warmup 2 --prepare "$prepare" "$v" "$p" ${floor:+"$floor"})
  local vw vc pw pc fw fc
  read -r vw vc _ <<<"$(sed -n 1p <<<"$out")"
  read -r pw pc _ <<<"$(sed -n 2p <<<"$out")"
  local floor_ms=""
  if [[ -n "$floor" ]]; then
    read -r fw fc _ <<<"$(sed -n 3p <<<"$out")"
    floor_ms=$(bench_pick "$fw" "$fc")
  fi
  bench_row "$label" "$(bench_pick "$vw" "$vc")" "$(bench_pick "$pw" "$pc")" ms "$floor_ms" 0 "$name"
}

# bench_ready LABEL RUNS SOCKET VDISK-CMD PEER-CMD: daemon start until its NBD socket serves.
bench_ready() {
  local label=$1 runs=$2 sock=$3 v=$4 p=$5 out vw vc pw pc
  out=$(python3 "$bench_py" ready --runs "$runs" --warmup 2 "$sock" "$v" "$p")
  read -r vw vc _ <<<"$(sed -n 1p <<<"$out")"
  read -r pw pc _ <<<"$(sed -n 2p <<<"$out")"
  bench_row "$label" "$(bench_pick "$vw" "$vc")" "$(bench_pick "$pw" "$pc")" ms "" 0 qemu-storage-daemon
}

# bench_serve PROGRAM NAME IMAGE FORMAT WRITABLE [EXTRA...]: starts a daemon in the background
# exporting IMAGE as "disk" on $work/NAME.sock, with qemu-storage-daemon's command line (vdisk
# serve takes the same), and returns when the socket serves. The same arguments go to both.
bench_serve() {
  local program=$1 name=$2 image=$3 format=$4 writable=$5
  shift 5
  local -a cmd
  if [[ "$program" == vdisk ]]; then cmd=("$vdisk" serve); else cmd=(qemu-storage-daemon); fi
  rm -f "$work/$name.sock"
  "${cmd[@]}" --blockdev "driver=file,node-name=f,filename=$image" --blockdev "driver=$format,node-name=disk,file=f" \
    --nbd-server "addr.type=unix,addr.path=$work/$name.sock" --export "type=nbd,id=e,node-name=disk,writable=$writable" "$@" &
  local i
  for i in $(seq 400); do
    [[ -S "$work/$name.sock" ]] && return
    sleep 0.05
  done
  echo "$name ($program) did not start" >&2
  exit 1
}

# bench_stop_daemons: ends every background job of the script and waits for it.
bench_stop_daemons() {
  local pids
  pids=$(jobs -p)
  if [[ -n "$pids" ]]; then
    kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
  fi
}

# bench_random_file PATH MIB: MIB MiB of incompressible data (rotated copies of one random MiB).
bench_random_file() {
  python3 - "$1" "$2" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    block = os.urandom(1 << 20)
    for i in range(int(sys.argv[2])):
        f.write(block[i % 251:] + block[:i % 251])
PY
}
