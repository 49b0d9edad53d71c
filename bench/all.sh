#!/usr/bin/env bash
# Every benchmark in one run, one table: start-up (--version, info, io read 4k, refused open,
# serve ready), convert both ways with the sparse-copy floor, convert from vmdk, vhdx, vpc, luks and
# from an NBD source, nbdcopy in/out and fio through vdisk serve vs qemu-storage-daemon, RSS per held
# image, and the `locks` scan. On demand (not
# in CI); needs what scripts/setup.sh installs and builds (bin/vdisk, or VDISK=...). Sizes are
# trimmed here to stay well under 10 minutes (each script's own defaults are larger).
#   BENCH_METRIC=wall|cpu (the start-up rows)  VDISK=bin/vdisk
BENCH_ROWS=$(mktemp)
export BENCH_ROWS
source "$(dirname "$0")/lib.sh"
trap 'bench_cleanup; rm -f "$BENCH_ROWS"' EXIT
export VDISK=$vdisk

start=$(date +%s)
bench/startup.sh
SIZE=1024 RUNS=5 bench/convert.sh
RUNS=3 bench/convert-vmdk.sh
RUNS=3 bench/convert-vhdx-vpc.sh
RUNS=3 bench/convert-luks.sh
RUNS=3 bench/convert-nbd.sh
SIZE=512 RUNS=3 bench/serve-nbdcopy.sh
SIZE=512 SECONDS_PER_JOB=4 ROUNDS=3 bench/serve-fio.sh
COUNTS=1000 bench/serve-memory.sh
RUNS=5 bench/locks-scan.sh 10000 1000
end=$(date +%s)

echo
bench_header
echo "start-up rows: median ${BENCH_METRIC:-wall} time of ${RUNS:-150} alternating runs; the others: see bench/*.sh; $((end - start)) s in all"
python3 "$bench_py" table "$BENCH_ROWS"
