#!/usr/bin/env bash
# Gateway benchmark (issue 6): kiss serve vs nginx on the same flat directory
# (narinfo_all, NAR c1/c16, plain HTTP and TLS), kiss serve on versitygw vs
# versitygw direct, and nix copy through kiss serve vs nginx WebDAV.
#
#   e2e/bench/serve.sh
#
# Environment: KISS_BENCH_PATHS (300), KISS_BENCH_REPEAT (5 runs a side,
# alternating; short scenarios run 2-5x as many; the target judges the median
# of the paired ratios, the ratio of the fastest runs is shown beside),
# KISS_BENCH_PUSH_PATHS (40), KISS_BENCH_PUSH=0 to skip the push,
# KISS_BENCH_OUT=file for the JSON, KISS_BENCH_ONLY=regexp to run some
# scenarios only (e.g. "s3"), KISS_BENCH_STRICT=1 to fail on a missed
# target. Everything runs on 127.0.0.1 and is removed afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
KISS_BENCH_SERVE=1 exec go test -count=1 -timeout 30m -run TestServeBench -v ./e2e/bench/serve/ "$@"
