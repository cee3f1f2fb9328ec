#!/usr/bin/env bash
# Listing benchmark (issue 3): kiss List on file:// and on versitygw (s3://)
# against find(1) over the same directory, in the same run, on 127.0.0.1 only.
#
#   e2e/bench/list.sh [KEYS] [ITERATIONS]     defaults: 100000 3
#
# KISS_BENCH_LIST_S3=0 skips versitygw. Bounded: KEYS ≤ 2,000,000, and the
# whole run is killed after 20 minutes.
set -euo pipefail
keys=${1:-100000}
iters=${2:-3}
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# go test -run '^\$' -bench BenchmarkList -benchtime ${iters}x ./e2e/bench/list/  (KISS_BENCH_LIST_KEYS=$keys)"
KISS_BENCH_LIST_KEYS=$keys timeout 1200 go test -run '^$' -bench BenchmarkList -benchtime "${iters}x" -count 1 -timeout 20m ./e2e/bench/list/ | tee "$out"
awk -v keys="$keys" '
  /^BenchmarkList\// {
    name = $1; sub(/^BenchmarkList\//, "", name); sub(/-[0-9]+$/, "", name)
    for (i = 2; i < NF; i++) if ($(i+1) == "keys/s") rate[name] = $i
    order[++n] = name
  }
  END {
    if (!("find" in rate)) { print "no find baseline in the output" > "/dev/stderr"; exit 1 }
    printf "\n%-16s %12s %10s %14s\n", "lister (" keys " keys)", "keys/s", "vs find", "vs find-printf"
    for (i = 1; i <= n; i++) {
      k = order[i]
      printf "%-16s %12.0f %9.2fx %13.2fx\n", k, rate[k], rate[k] / rate["find"], rate[k] / rate["find-printf"]
    }
  }' "$out"
