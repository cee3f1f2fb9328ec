#!/usr/bin/env bash
# Prune benchmark (issue 4): kiss prune on a synthetic cache vs a baseline.
#
#   e2e/bench/prune.sh [N]        N narinfos (default 100000); 1000000 for the documented run
#
# Builds kiss and kiss-synth, generates N paths into a temp dir (file://,
# mtimes 30-60 days old, 0.2% newborns), and measures in one run:
#   baseline  a parallel read of every reachable narinfo (keys known in advance)
#             at the pruner's own concurrency (best of KISS_BENCH_REPEAT)
#   cold      kiss --json prune --dry-run DIR, no memo     (target ≤ 1.5× baseline)
#   warm      the same with the memo of a real prune        (target ≤ 0.3× baseline)
#   RSS       peak RSS of the dry runs (/usr/bin/time %M of the child; ≤ 400 MiB at 1M)
#   CPU       user+sys seconds of each child too: wall-time ratios swing with other load
# plus a real prune on a hard-linked copy, checked against the generator's
# manifest (nothing live or newborn deleted, all garbage gone).
#
# Environment:
#   KISS_BENCH_FAIL_FACTOR  exit 1 if a target is missed by more than this factor (default 0: report only)
#   KISS_BENCH_REPEAT       runs per measurement, the fastest counts (default 3)
#   KISS_BENCH_TMP          where the cache goes (default $TMPDIR or /tmp); needs ~10 kB per path
#   KISS_BENCH_TIMEOUT      seconds for the whole run (default 3600)
#   KISS_BENCH_OUT          also write the JSON results to this file
# Everything it creates is removed on exit.
set -euo pipefail

N=${1:-100000}
case $N in ''|*[!0-9]*) echo "usage: $0 [N]" >&2; exit 2;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${KISS_BENCH_TMP:-${TMPDIR:-/tmp}}
need_kb=$(( N * 12 + 200000 ))
free_kb=$(df -Pk "$BASE" | awk 'NR==2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
  echo "prune.sh: $BASE has $((free_kb/1024)) MiB free, $N paths need about $((need_kb/1024)) MiB" >&2
  exit 1
fi

WORK=$(mktemp -d "$BASE/kiss-prune-bench.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building kiss and kiss-synth" >&2
(cd "$ROOT" && go build -o "$WORK/bin/kiss" ./cmd/kiss && go build -o "$WORK/bin/kiss-synth" ./cmd/kiss-synth)

echo "== $N paths in $WORK ($(nproc) CPUs, $(uname -r))" >&2
args=(bench --kiss "$WORK/bin/kiss" --work "$WORK/run" --paths "$N"
      --repeat "${KISS_BENCH_REPEAT:-3}" --fail-factor "${KISS_BENCH_FAIL_FACTOR:-0}"
      --timeout "${KISS_BENCH_TIMEOUT:-3600}s")
if [ -n "${KISS_BENCH_OUT:-}" ]; then args+=(--json-out "$KISS_BENCH_OUT"); fi
timeout --kill-after=30 "${KISS_BENCH_TIMEOUT:-3600}" "$WORK/bin/kiss-synth" "${args[@]}"
