#!/usr/bin/env bash
# Runs every test: unit and property tests, interop tests against real QEMU 7.2, and the QEMU
# iotests vdisk is known to pass (scripts/iotests.sh --ci: tests/iotests/{raw,qcow2,vmdk,vpc,vdi,luks,bochs}.pass;
# the vmdk, vpc, vdi, luks and bochs lists hold only fast tests).
# Installs what is missing and builds bin/vdisk first (scripts/setup.sh --no-demo).
# Ends with one line "N passed, N failed[, N skipped]" summed over all test projects and
# every iotest run (one test per iotest and format).
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-demo || { echo "0 passed, 1 failed"; exit 1; }

# The interop tests run the shipped NativeAOT binary that setup.sh just built.
export VDISK_BIN="$PWD/bin/vdisk"

results=artifacts/test-results
rm -rf "$results"
mkdir -p "$results"

if ! dotnet build VdiskSuite.slnx -c Release --nologo -v quiet; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

status=0
for project in tests/Vdisk.Tests tests/Vdisk.Interop; do
  name=$(basename "$project")
  echo "== $name"
  dotnet test "$project" -c Release --no-build --nologo \
    --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" \
    --results-directory "$results" || status=1
done

# QEMU's own regression tests on the pass list: a regression there fails the run.
echo "== qemu-iotests (pass list)"
rm -f artifacts/iotests-vdisk.txt
# A hung test fails the run instead of stalling it (the whole list takes a few minutes).
timeout --kill-after=30 1500 scripts/iotests.sh --ci --raw --qcow2 --vmdk --vpc --vdi --luks --bochs || status=1

passed=0; failed=0; skipped=0
if [[ -f artifacts/iotests-vdisk.txt ]]; then
  passed=$(grep -c ' pass$' artifacts/iotests-vdisk.txt)
  failed=$(grep -c ' fail$' artifacts/iotests-vdisk.txt)
  skipped=$(grep -c ' not-run$' artifacts/iotests-vdisk.txt)
fi
for trx in "$results"/*.trx; do
  [[ -f "$trx" ]] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  get() { echo "$counters" | sed -nE "s/.* $1=\"([0-9]+)\".*/\1/p"; }
  # Skipped tests are neither executed nor counted as notExecuted in the trx: total - executed.
  p=$(get passed); f=$(get failed); e=$(get error); t=$(get total); x=$(get executed)
  n=$(( ${t:-0} - ${x:-0} ))
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0})); skipped=$((skipped + ${n:-0}))
done
if [[ $status -ne 0 && $failed -eq 0 ]]; then failed=1; fi
summary="$passed passed, $failed failed"
((skipped > 0)) && summary+=", $skipped skipped"
echo "$summary"
[[ $failed -eq 0 && $status -eq 0 ]]
