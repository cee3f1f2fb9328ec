#!/usr/bin/env bash
# CI smoke variant of prune.sh: 100k paths, two runs per measurement, bounded
# to 10 minutes, and FAIL when a target is missed by more than 2× (cold > 3×
# baseline, warm > 0.6× baseline, RSS > 800 MiB) or the prune loses anything.
set -euo pipefail
export KISS_BENCH_FAIL_FACTOR=${KISS_BENCH_FAIL_FACTOR:-2}
export KISS_BENCH_REPEAT=${KISS_BENCH_REPEAT:-2}
export KISS_BENCH_TIMEOUT=${KISS_BENCH_TIMEOUT:-600}
exec "$(dirname "$0")/prune.sh" "${1:-100000}"
