#!/usr/bin/env bash
# Regenerates src/Vdisk.Cli/startup.order, the symbol order ILC lays the binary out in
# (IlcOrderFile in Vdisk.Cli.csproj; docs/architecture.md, "Start-up"): the managed functions and
# data a one-shot run touches, found by running the one-shot commands of bench/startup.sh (and the
# daemon until it greets a client) under valgrind's lackey (every instruction and data address)
# and naming the addresses with the symbols of vdisk.dbg. Laid out together they take a few page
# faults instead of one per 64 KiB
# of code they are spread over. Names that no longer exist are ignored by ILC, so a stale file
# only loses speed; rerun this after large changes on the one-shot paths, then publish again.
#   scripts/startup-order.sh [BINARY]     (default: artifacts/publish/vdisk, with vdisk.dbg beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-artifacts/publish/vdisk}")
symbols="${binary%/*}/vdisk.dbg"
[[ -f "$symbols" ]] || { echo "startup-order.sh: $symbols not found (publish with NativeDebugSymbols)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "startup-order.sh: valgrind is needed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-order.XXXXXX")
trap 'rm -rf "$work"' EXIT
# valgrind cannot read NativeAOT's debug file: run a copy without it beside.
cp "$binary" "$work/vdisk"
qemu-img create -q -f raw "$work/img.raw" 64M
qemu-img create -q -f qcow2 "$work/img.qcow2" 64M
nm -n --defined-only "$symbols" > "$work/symbols"

# Each run's addresses stream through a filter that keeps the symbols it touched, in address
# order; the runs' lists are joined in the order listed here, each symbol once.
runs=(
  "--version"
  "info $work/img.qcow2"
  "io -f raw $work/img.raw -c read_0_4k"
  "io -f qcow2 $work/img.qcow2 -c read_0_4k"
  "io -f raw $work/held.raw -c write_0_4k"
)
# The last run is a refused open, bench/startup.sh's row: a paused VM's virtio-blk device holds
# held.raw (it refuses other writers).
qemu-img create -q -f raw "$work/held.raw" 1M
qemu-system-x86_64 -S -nodefaults -display none -machine pc,accel=tcg \
  -drive if=none,id=d0,file="$work/held.raw",format=raw -device virtio-blk-pci,drive=d0 2>/dev/null &
holder=$!
trap 'kill $holder 2>/dev/null; rm -rf "$work"' EXIT
held_inode=$(stat -c %i "$work/held.raw")
for _ in $(seq 400); do
  grep -q ":$held_inode 201 201$" /proc/locks && break  # the unshared "write" byte
  sleep 0.05
done
grep -q ":$held_inode 201 201$" /proc/locks || { echo "startup-order.sh: the VM never held $work/held.raw" >&2; exit 1; }
cat > "$work/touched.py" <<'PY'
import bisect, subprocess, sys
symbols_file, binary = sys.argv[1], sys.argv[2]
# The binary's managed code (__managedcode) and its data (.rodata to the end of .data).
sections = {}
for line in subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout.splitlines():
    parts = line.replace("[ ", "[").split()
    if len(parts) > 5 and parts[0][:1] == "[" and parts[0][1:-1].isdigit():
        sections[parts[1]] = (int(parts[3], 16), int(parts[5], 16))
code = (sections["__managedcode"][0], sum(sections["__managedcode"]))
data = (sections[".rodata"][0], sum(sections[".data"]))
symbols = []
for line in open(symbols_file):
    parts = line.split()
    if len(parts) == 3:
        symbols.append((int(parts[0], 16), parts[2]))
starts = [address for address, _ in symbols]
touched = set()
for line in sys.stdin:
    kind = line[:2]
    try:
        address = int(line[3:].split(",")[0], 16)
    except ValueError:
        continue
    if (kind == "I " and code[0] <= address < code[1]) or (kind != "I " and data[0] <= address < data[1]):
        at = bisect.bisect_right(starts, address) - 1
        if at >= 0:
            touched.add(symbols[at])
for _, name in sorted(touched):
    print(name)
PY
: > "$work/order"
for run in "${runs[@]}"; do
  read -ra args <<<"$run"
  args=("${args[@]/read_0_4k/read 0 4k}")
  args=("${args[@]/write_0_4k/write 0 4k}")
  # The refused open fails (status 1) by design; any other failure stops the script.
  expected=0
  [[ "$run" == *write_0_4k* ]] && expected=1
  statuses=(0 0)
  valgrind --tool=lackey --trace-mem=yes --log-fd=9 "$work/vdisk" "${args[@]}" 9>&1 >/dev/null 2>/dev/null \
    | python3 "$work/touched.py" "$work/symbols" "$binary" >> "$work/order" || statuses=("${PIPESTATUS[@]}")
  ((statuses[0] == expected)) || { echo "startup-order.sh: vdisk $run: status ${statuses[0]}, expected $expected" >&2; exit 1; }
  ((statuses[1] == 0)) || { echo "startup-order.sh: naming the addresses of vdisk $run failed" >&2; exit 1; }
done
# Last, the daemon (bench/startup.sh's serve row): from its start until it has greeted a client
# on its NBD socket; then SIGTERM stops it cleanly and lackey's stream ends. The stream goes
# through a fifo so that both the daemon and its reader have pids to wait for and to kill.
serve_args=(--blockdev "driver=file,node-name=f,filename=$work/img.qcow2" --blockdev "driver=qcow2,node-name=disk,file=f"
  --nbd-server "addr.type=unix,addr.path=$work/serve.sock" --export "type=nbd,id=e,node-name=disk")
mkfifo "$work/serve.trace"
python3 "$work/touched.py" "$work/symbols" "$binary" < "$work/serve.trace" > "$work/serve.order" &
reader=$!
valgrind --tool=lackey --trace-mem=yes --log-fd=9 "$work/vdisk" serve "${serve_args[@]}" 9> "$work/serve.trace" >/dev/null 2>/dev/null &
serve=$!
trap 'kill $holder $serve $reader 2>/dev/null; rm -rf "$work"' EXIT
python3 - "$work/serve.sock" "$serve" <<'PY'
import os, socket, sys, time
path, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("startup-order.sh: vdisk serve exited before it greeted a client")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            if s.recv(8) == b"NBDMAGIC":
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("startup-order.sh: vdisk serve never greeted a client")
PY
kill -TERM $serve
wait $serve || { echo "startup-order.sh: vdisk serve did not stop cleanly on SIGTERM" >&2; exit 1; }
wait $reader || { echo "startup-order.sh: naming the addresses of vdisk serve failed" >&2; exit 1; }
cat "$work/serve.order" >> "$work/order"
awk '!seen[$0]++' "$work/order" > src/Vdisk.Cli/startup.order
echo "src/Vdisk.Cli/startup.order: $(wc -l < src/Vdisk.Cli/startup.order) symbols" >&2
