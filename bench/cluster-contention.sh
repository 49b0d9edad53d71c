#!/usr/bin/env bash
# Contention: 16 racers on 4 hosts ask for write (not shared) on one image at the same instant,
# 500 rounds; admitted/refused counts and wall time. Runs the race tests of
# tests/Vdisk.Interop/Cluster (a 3-member etcd on loopback they start themselves): the 500-round writers race (200 rounds with mixed requests)
# with 16 lock clients in one process (each its own etcd connection, lease and host id),
# and 16 LockProbe processes (local OFD locks too) for fewer rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build tests/Vdisk.Interop -c Release --nologo -v quiet >/dev/null
dotnet test tests/Vdisk.Interop -c Release --no-build --nologo --filter 'FullyQualifiedName~Cluster.ClusterRaceTests' \
  --logger "console;verbosity=detailed" 2>&1 | grep -E "rounds x 16|Passed!|Failed!" | sed 's/^ *//'
