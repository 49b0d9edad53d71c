#!/usr/bin/env bash
# Runs QEMU 7.2's own regression suite (tests/qemu-iotests) against vdisk, or against the real
# QEMU tools (--reference), or both in one run (--compare).
#
#   scripts/iotests.sh [--reference|--compare] [--raw|--qcow2|--luks|--vmdk|--vpc|--vhdx|--vdi|--bochs ...] [--ci|--quick] [TEST...]
#
#   TEST...     iotests to run (e.g. 001 153 nbd-qemu-allocation); default: --ci
#   --ci        the tests vdisk is known to pass, kept in tests/iotests/FMT.pass (none for a
#               format without such a list)
#   --quick     every bash iotest of the quick group (the full acceptance run)
#   --raw/--qcow2/--luks/--vmdk/--vpc/--vhdx/--vdi/--bochs  the image formats to run, each given once (default:
#               raw and qcow2); ./check runs the tests that support the format, the others are
#               "not run"
#   --reference run the real QEMU tools instead of vdisk
#   --compare   run vdisk, then QEMU, on the same tests and print both with their wall times
#
# The QEMU source comes from Debian (`apt-get source qemu`, the version of the installed
# qemu-utils), enabling a deb-src entry for the same suites when none exists; only
# tests/qemu-iotests and python/ are unpacked, under artifacts/qemu-iotests/. The copy's harness
# gets three fixes (see "fixes to the harness" below). QEMU_PROG is always the real
# qemu-system-x86_64. Tests run in parallel, IOTESTS_JOBS at a time (default: one per core).
#
# Prints one line per test and format, then the diff of expected and actual output of each test
# that failed, then `iotests: P passed, F failed, N not run (FMT)` per format; exits non-zero
# when any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=vdisk formats=() selection="" tests=()
while (($#)); do
  case "$1" in
    --reference) mode=reference ;;
    --compare) mode=compare ;;
    --raw|--qcow2|--luks|--vmdk|--vpc|--vhdx|--vdi|--bochs) formats+=("${1#--}") ;;
    --ci) selection=ci ;;
    --quick) selection=quick ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "iotests.sh: unknown option '$1'" >&2; exit 2 ;;
    *) tests+=("$1") ;;
  esac
  shift
done
[[ ${#tests[@]} -eq 0 && -z $selection ]] && selection=ci
((${#formats[@]})) || formats=(raw qcow2)

# --- the QEMU source matching the installed tools -------------------------------------------
src_version=$(dpkg-query -W -f='${source:Version}' qemu-utils 2>/dev/null) || {
  echo "iotests.sh: qemu-utils is not installed (run scripts/setup.sh first)" >&2; exit 1; }
cache=artifacts/qemu-iotests
stamp=$cache/.source-$src_version

fetch_source() {
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  if ! apt-get source --print-uris "qemu=$src_version" >/dev/null 2>&1; then
    # No deb-src for this suite yet: add one for the suites the binary packages come from.
    local suites
    suites=$(sed -n 's/^Suites: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [[ -n $suites ]] || suites="$(. /etc/os-release; echo "$VERSION_CODENAME $VERSION_CODENAME-updates")"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$suites" | $sudo tee /etc/apt/sources.list.d/vdisk-deb-src.sources >/dev/null
    $sudo apt-get update -qq
  fi
  rm -rf "$cache"; mkdir -p "$cache"
  (cd "$cache" && apt-get source --download-only "qemu=$src_version" >/dev/null 2>&1) || {
    echo "iotests.sh: apt-get source qemu=$src_version failed" >&2; exit 1; }
  local orig top
  orig=$(ls "$cache"/qemu_*.orig.tar.xz)
  top=$(set +o pipefail; tar -tJf "$orig" 2>/dev/null | head -1); top=${top%%/*}
  tar -xJf "$orig" -C "$cache" --wildcards "$top/tests/qemu-iotests/*" "$top/python/*"
  mv "$cache/$top" "$cache/qemu"
  # Debian's patches may touch the tests: apply those that do.
  tar -xJf "$cache"/qemu_*.debian.tar.xz -C "$cache" 2>/dev/null || true
  if [[ -f $cache/debian/patches/series ]]; then
    while read -r patch; do
      [[ -z $patch || $patch == \#* ]] && continue
      grep -q '^+++ [^ ]*tests/qemu-iotests/' "$cache/debian/patches/$patch" 2>/dev/null || continue
      (cd "$cache/qemu" && patch -s -p1 --forward < "../debian/patches/$patch" >/dev/null) || true
    done < "$cache/debian/patches/series"
  fi
  rm -f "$cache"/qemu_*
  touch "$stamp"
}
iotests=$cache/qemu/tests/qemu-iotests
[[ -f $stamp && -d $iotests ]] || fetch_source

# The fixes to the harness (to this copy, never to QEMU), applied on every run so that an older
# copy gets them too:
# - VMs start with `-accel tcg`: Debian's qemu-system has no qtest accelerator.
# - _cleanup_qemu kills a VM and `wait`s for it, but the VM is a grandchild of the test's shell
#   (_qemu_wrapper runs it in a subshell of a background job), so `wait` returns at once and the
#   next command can find the VM's lock bytes still held. A tool that starts fast loses that race
#   (130 failed one run in three with vdisk): the cleanup also waits until the process is gone.
# - nbd_server_stop (common.nbd) sends SIGTERM to the qemu-nbd it started and returns at once; a
#   test that then starts another qemu-nbd on the same image (223: read-only, then read-write)
#   finds the first one's lock bytes still held if the new one opens the image before the old
#   one has exited. QEMU's qemu-nbd takes longer to start than to exit and seldom loses that
#   race; vdisk starts sooner (223 failed once in 150 runs under load here, and once in CI).
#   QEMU's developers describe the same race ("nbd_server_stop only sends a signal to the nbd
#   process and immediately returns", qemu-devel, June 2019, "iotests: amend QEMU NBD process
#   synchronization"). The stop also waits until the process is gone.
sed -i 's/-accel qtest/-accel tcg/' "$iotests/testenv.py"
# Adds the lines SED_EXPRESSION inserts into FILE unless MARKER, a phrase of their comment, is
# there already; fails when the file no longer has what the expression looks for.
patch_harness() { # $1 = file, $2 = marker, $3 = sed expression
  grep -q "$2" "$1" && return 0
  sed -i "$3" "$1"
  grep -q "$2" "$1" || { echo "iotests.sh: could not patch ${1##*/}" >&2; exit 1; }
}
patch_harness "$iotests/common.qemu" 'until the VM is gone' \
  's|^\( *\)wait \${QEMU_PID} 2>/dev/null # silent kill$|&\n\1# vdisk (scripts/iotests.sh): until the VM is gone, as it is no child of this shell\n\1while kill -0 ${QEMU_PID} 2>/dev/null; do sleep 0.01; done|'
patch_harness "$iotests/common.nbd" 'until the server is gone' \
  's|^\( *\)kill "\$NBD_PID"$|&\n\1# vdisk (scripts/iotests.sh): until the server is gone, so that its locks are released\n\1while kill -0 "$NBD_PID" 2>/dev/null; do sleep 0.01; done|'

# --- the programs ---------------------------------------------------------------------------
personalities=(qemu-img qemu-io qemu-nbd qemu-storage-daemon)
use_programs() { # $1 = vdisk | reference
  export QEMU_PROG=/usr/bin/qemu-system-x86_64
  local dir=/usr/bin
  if [[ $1 == vdisk ]]; then
    dir=$root/bin
    for p in "${personalities[@]}"; do
      [[ -x $dir/$p ]] || { echo "iotests.sh: $dir/$p is missing (run scripts/setup.sh)" >&2; exit 1; }
    done
  fi
  export QEMU_IMG_PROG=$dir/qemu-img QEMU_IO_PROG=$dir/qemu-io QEMU_NBD_PROG=$dir/qemu-nbd QSD_PROG=$dir/qemu-storage-daemon
}

list_for() { # $1 = format
  if ((${#tests[@]})); then printf '%s\n' "${tests[@]}"; return; fi
  if [[ $selection == ci ]]; then
    [[ -f tests/iotests/$1.pass ]] || return 0
    grep -v '^\s*\(#\|$\)' "tests/iotests/$1.pass" | awk '{print $1}'
  else
    (cd "$iotests" && python3 ./check -n "-$1" -g quick 2>/dev/null) | sed 's#^tests/##' |
      while read -r t; do
        f=$iotests/$t; [[ -f $f ]] || f=$iotests/tests/$t
        head -1 "$f" | grep -q bash && echo "$t"
      done
  fi
}

# Tests that must run alone, not beside others (a second word "alone" on their line of the pass
# list): their expected output is the timing of a VM's block job, which other tests' load changes.
alone_for() { # $1 = format
  [[ -f tests/iotests/$1.pass ]] || return 0
  awk '!/^[[:space:]]*(#|$)/ && $2 == "alone" { print $1 }' "tests/iotests/$1.pass"
}

# Runs one format through ./check with TAP output; prints "FMT TEST RESULT" lines to $2.
run_format() { # $1 = format, $2 = results file
  local fmt=$1 out=$2 list alone together=() apart=() t
  mapfile -t list < <(list_for "$fmt")
  mapfile -t alone < <(alone_for "$fmt")
  for t in "${list[@]}"; do
    if [[ " ${alone[*]} " == *" $t "* ]]; then apart+=("$t"); else together+=("$t"); fi
  done
  : > "$out"; : > "$out.tap"; : > "$out.diffs"
  rm -rf "$iotests/scratch"
  # The others run in parallel (each in its own scratch directory): IOTESTS_JOBS at a time,
  # default one per core.
  ((${#together[@]})) && run_check "$fmt" "$out" "${IOTESTS_JOBS:-$(nproc)}" "${together[@]}"
  ((${#apart[@]})) && run_check "$fmt" "$out" 1 "${apart[@]}"
  return 0
}

run_check() { # $1 = format, $2 = results file, $3 = jobs, then the tests
  local fmt=$1 out=$2 jobs=$3; shift 3
  # check exits non-zero when a test fails: the results say so, and the next format still runs.
  # Parallel workers' result lines can run together ("ok vmdk 005ok vmdk 010"): split them first.
  (cd "$iotests" && python3 ./check -tap -j "$jobs" "-$fmt" "$@" 2>&1 || true) | tee -a "$out.tap" |
    perl -pe "s/(?<=\\S)(?=(?:not )?ok $fmt )/\\n/g" |
    awk -v fmt="$fmt" -v diffs="$out.diffs" '
      /^ok / && /# SKIP/ { print fmt, $3, "not-run"; fflush(); next }
      /^ok /             { print fmt, $3, "pass"; fflush(); next }
      /^not ok /         { print fmt, $4, "fail"; fflush(); next }
      # For a failed test check prints the diff of expected and actual output on stderr,
      # right after the result line; nothing else is outside TAP. Kept for print_failures.
      !/^(#|1\.\.)/     { print >> diffs }' | tee -a "$out"
}

# What a failed test printed differently: shown before the summary, so that a run that only
# keeps the end of the output (CI) still says why.
print_failures() { # $1 = results file
  local fmt
  for fmt in "${formats[@]}"; do
    [[ -s $1.$fmt.diffs ]] || continue
    echo "--- iotests that failed ($fmt): expected against actual output"
    cat "$1.$fmt.diffs"
  done
}

summarise() { # $1 = results file, $2 = label: one line over every format
  local parts=() fmt
  for fmt in "${formats[@]}"; do
    parts+=("$(awk -v fmt="$fmt" '$1 == fmt { n[$3]++ }
      END { printf "%d passed, %d failed, %d not run (%s)", n["pass"], n["fail"], n["not-run"], fmt }' "$1")")
  done
  local IFS=';'
  echo "$2: ${parts[*]}" | sed 's/;/; /g'
}

run_all() { # $1 = vdisk | reference; prints results into artifacts/iotests-$1.txt
  use_programs "$1"
  local results=artifacts/iotests-$1.txt start end
  : > "$results"
  start=$(date +%s.%N)
  for fmt in "${formats[@]}"; do run_format "$fmt" "$results.$fmt"; cat "$results.$fmt" >> "$results"; done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }' > "$results.seconds"
}

mkdir -p artifacts
case $mode in
  vdisk|reference)
    run_all "$mode"
    label=iotests; [[ $mode == reference ]] && label="iotests (QEMU)"
    print_failures "artifacts/iotests-$mode.txt"
    printf 'wall time: %.1f s\n' "$(cat artifacts/iotests-$mode.txt.seconds)"
    summarise "artifacts/iotests-$mode.txt" "$label"
    ! grep -q ' fail$' "artifacts/iotests-$mode.txt" ;;
  compare)
    run_all vdisk; run_all reference
    echo
    echo "test            vdisk     QEMU"
    join -j 1 <(awk '{print $1"/"$2, $3}' artifacts/iotests-vdisk.txt | sort) \
              <(awk '{print $1"/"$2, $3}' artifacts/iotests-reference.txt | sort) |
      awk '{ printf "%-15s %-9s %s%s\n", $1, $2, $3, ($2 != $3 ? "   <- differs" : "") }'
    v=$(cat artifacts/iotests-vdisk.txt.seconds); q=$(cat artifacts/iotests-reference.txt.seconds)
    printf 'wall time: vdisk %.1f s, QEMU %.1f s, ratio %.2f\n' "$v" "$q" "$(awk -v a="$v" -v b="$q" 'BEGIN { print a / b }')"
    summarise artifacts/iotests-vdisk.txt iotests
    summarise artifacts/iotests-reference.txt "iotests (QEMU)"
    ! grep -q ' fail$' artifacts/iotests-vdisk.txt ;;
esac
