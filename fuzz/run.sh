#!/usr/bin/env bash
# Run fuzz targets one after another, each for SECONDS, with the limits the
# campaign used (docs/security.md), and append one line per run to
# runs/summary.tsv: when, target, seconds, executions, corpus files, crash
# files.
#
#   fuzz/run.sh SECONDS TARGET...
#   fuzz/run.sh 600 dump_open isf
#
# The full log of each run is runs/<target>-<time>.log; crashes, OOMs and
# timeouts land in artifacts/<target>/ (libFuzzer stops at the first).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
secs=${1:?usage: run.sh SECONDS TARGET...}
shift
mkdir -p "$here/runs"
cd "$here"
for t in "$@"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  stamp=$(date -u +%Y%m%dT%H%M%S)
  log="runs/$t-$stamp.log"
  # Build first, so the time recorded is fuzzing time.
  cargo +nightly fuzz build -O -s none "$t" >"runs/build-$t.log" 2>&1 || {
    echo "$t: build failed (runs/build-$t.log)"; continue; }
  start=$(date +%s)
  cargo +nightly fuzz run -O -s none "$t" -- \
    -max_total_time="$secs" -rss_limit_mb=300 -timeout=10 \
    -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(ls "corpus/$t" | wc -l)
  crashes=$(ls "artifacts/$t" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$stamp" "$t" "$took" "${execs:-0}" "$corpus" "$crashes" "$rc" \
    >>runs/summary.tsv
  echo "$t: ${took}s, ${execs:-0} execs, corpus $corpus, artifacts $crashes, exit $rc"
done
