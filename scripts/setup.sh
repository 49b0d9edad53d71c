#!/usr/bin/env bash
# One-time set-up on a fresh Debian 12 machine with the .NET 10 SDK:
# installs QEMU 7.2, libnbd, etcd (for the cluster-lock tests) and the tools the tests use, builds bin/vdisk (NativeAOT),
# and runs a short demo of QEMU-compatible image locking on a sample image.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-utils qemu-system-x86 libnbd-bin libfuse3-3 hyperfine fio gcc libc6-dev clang zlib1g-dev util-linux python3 etcd-server etcd-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "Installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "Building bin/vdisk and bin/vdisk-etcd (NativeAOT)..."
dotnet publish src/Vdisk.Cli -c Release -r linux-x64 -p:PublishAot=true -o artifacts/publish --nologo -v quiet
# The etcd client of cluster locks, a helper vdisk starts beside itself (docs/cluster.md).
dotnet publish src/Vdisk.EtcdAgent -c Release -r linux-x64 -p:PublishAot=true -o artifacts/publish-etcd --nologo -v quiet
mkdir -p bin
cp artifacts/publish/vdisk bin/vdisk
cp artifacts/publish-etcd/vdisk-etcd bin/vdisk-etcd
# Multi-call: under QEMU's tool names vdisk acts as those tools. The links live in bin/ only,
# never beside the system's QEMU (docs/drop-in.md says how to put them first on PATH).
for tool in qemu-img qemu-io qemu-nbd qemu-storage-daemon; do
  ln -sfn vdisk "bin/$tool"
done

if [[ "${1:-}" != "--no-demo" ]]; then
  scripts/demo.sh
fi
