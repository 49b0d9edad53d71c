#!/usr/bin/env bash
# fio over NBD (fio's nbd engine, libnbd) against vdisk serve and qemu-storage-daemon started
# with the same command line: 4 KiB random reads and random writes at queue depth 32, and 1 MiB
# sequential reads at queue depth 8, on a SIZE image (default 1 GiB) filled with random data.
# Each job runs SECONDS (default 5) per tool, ROUNDS (default 2) alternating rounds; the rows
# give the median IOPS or MiB/s (ratio = qsd's rate / vdisk's: below 1, vdisk is faster).
#   SIZE=1024 (MiB)  SECONDS_PER_JOB=5  ROUNDS=2  FORMATS="raw qcow2"  VDISK=bin/vdisk
source "$(dirname "$0")/lib.sh"
size=${SIZE:-1024}
seconds=${SECONDS_PER_JOB:-5}
rounds=${ROUNDS:-2}
command -v fio >/dev/null || { echo "fio not found: run scripts/setup.sh" >&2; exit 1; }

bench_random_file "$work/source.raw" "$size"

# job LABEL UNIT fresh|cached FIO-ARGS...: runs the job against both daemons, alternating, and
# adds a row. Before each run the image's pages are dropped from the page cache ("fresh") or
# read into it ("cached": the read rows measure the servers, not the disk).
job() {
  local label=$1 unit=$2 pages=$3 round side
  shift 3
  for round in $(seq "$rounds"); do
    for side in v q; do
      # Each job starts from clean pages: the kernel writing back the set-up's copies or the
      # previous job's writes would slow whichever daemon runs next.
      sync
      # Random 4k writes into the pages qemu-img convert left in the page cache ran at a third
      # to a half of the rate of writes into fresh pages, for both daemons alike (measured;
      # likely the converter's large writes leave large page-cache folios, each of which a 4k
      # write then dirties whole), so the row measured the kernel's writeback, not the servers.
      if [[ "$pages" == fresh ]]; then python3 "$bench_py" evict "$work/$side.img"; else cat "$work/$side.img" >/dev/null; fi
      fio --name=bench --ioengine=nbd --uri="nbd+unix:///disk?socket=$work/$side.sock" \
        --time_based --runtime="$seconds" --ramp_time=1 --output-format=json \
        --output="$work/$side.$round.json" "$@" >/dev/null
    done
  done
  local v q column
  if [[ "$unit" == IOPS ]]; then column=1; else column=2; fi
  v=$(python3 "$bench_py" fio "$work"/v.*.json | cut -d' ' -f$column)
  q=$(python3 "$bench_py" fio "$work"/q.*.json | cut -d' ' -f$column)
  rm -f "$work"/*.json
  bench_row "$label" "$v" "$q" "$unit" "" 1 qemu-storage-daemon
}

for format in ${FORMATS:-raw qcow2}; do
  for side in v q; do qemu-img convert -q -f raw -O "$format" "$work/source.raw" "$work/$side.img"; done
  bench_serve vdisk v "$work/v.img" "$format" on
  bench_serve qsd q "$work/q.img" "$format" on
  job "fio randread 4k QD32 ($format)" IOPS cached --rw=randread --bs=4k --iodepth=32
  job "fio randwrite 4k QD32 ($format)" IOPS fresh --rw=randwrite --bs=4k --iodepth=32
  job "fio read 1M QD8 ($format)" MiB/s cached --rw=read --bs=1M --iodepth=8
  bench_stop_daemons
  rm -f "$work"/?.img
done

bench_table
