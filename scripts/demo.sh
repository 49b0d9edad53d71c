#!/usr/bin/env bash
# The main job in one minute: vdisk and QEMU protect one image from each other.
set -euo pipefail
cd "$(dirname "$0")/.."
VDISK=${VDISK:-bin/vdisk}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
img="$dir/sample.raw"
qemu-img create -q -f raw "$img" 64M

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "A QEMU virtual disk (virtio-blk, paused) holds the image read-write" \
     "qemu-system-x86_64 -S ... -drive file=$img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0"
qemu-system-x86_64 -S -nodefaults -display none -machine pc \
  -drive if=none,id=d0,file="$img",format=raw -device virtio-blk-pci,drive=d0 &
for _ in $(seq 100); do grep -q " 201 " /proc/locks 2>/dev/null && break; sleep 0.05; done
sleep 0.2
echo "(/proc/locks: OFD read locks on bytes $(awk '$2=="OFDLCK"{print $7}' /proc/locks | sort -n | paste -sd,): 100 = holds consistent-read, 101 = holds write, 201 = refuses to share write)"

step "A second writer is refused, with QEMU's message" "vdisk io -f raw IMG -c 'write 0 4k'"
$VDISK io -f raw "$img" -c 'write 0 4k' && echo "unexpected: admitted" || echo "(exit $?)"

step "A reader that shares writes is admitted" "vdisk io -r -f raw IMG -c 'read 0 4k'"
$VDISK io -r -f raw "$img" -c 'read 0 4k'

step "qemu-img info works too" "vdisk info IMG"
$VDISK info -f raw "$img"

kill %1; wait %1 2>/dev/null || true

step "With the VM gone, vdisk holds the image as a writer" "vdisk io -f raw IMG -c 'write -P 0x5a 0 4k' -c 'sleep 60000' &"
$VDISK io -f raw "$img" -c 'write -P 0x5a 0 4k' -c 'sleep 60000' >/dev/null &
for _ in $(seq 100); do grep -q "OFDLCK" /proc/locks 2>/dev/null && break; sleep 0.05; done
sleep 0.2

step "QEMU's guest device, which refuses to share writes, is refused by vdisk's writer" \
     "qemu-system-x86_64 -S ... -device virtio-blk-pci,drive=d0"
qemu-system-x86_64 -S -nodefaults -display none -machine pc \
  -drive if=none,id=d0,file="$img",format=raw -device virtio-blk-pci,drive=d0 && echo "unexpected: admitted" || echo "(exit $?)"

step "qemu-io reads what vdisk wrote, sharing the image with it" "qemu-io -r -f raw IMG -c 'read -P 0x5a 0 4k'"
qemu-io -r -f raw "$img" -c 'read -P 0x5a 0 4k'
echo
echo "Demo done: vdisk and QEMU took the same lock bytes and admitted/refused each other as two QEMUs would."
