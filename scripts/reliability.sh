#!/usr/bin/env bash
# Runs the permanent reliability suite and regenerates docs/reliability.md
# from what it recorded. The same tests run, bounded, in every CI run
# (scripts/test.sh); this script is the way to refresh the document, and to
# run them long:
#
#   bash scripts/reliability.sh                      # torture 60s, fuzz 10s per target
#   KISS_TORTURE_DURATION=30m KISS_FUZZTIME=2m bash scripts/reliability.sh   # the long run
#
# Run it on a quiet machine: the torture run is timing-sensitive only in
# how much it gets done, never in what it asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:--mod=mod}
export KISS_REQUIRE_S3=1 KISS_REQUIRE_NIX=1 AWS_EC2_METADATA_DISABLED=true
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
export KISS_RELIABILITY_DIR=$results
export KISS_TORTURE_DURATION=${KISS_TORTURE_DURATION:-60s}
torture=$KISS_TORTURE_DURATION
fuzztime=${KISS_FUZZTIME:-10s}
cmd="KISS_TORTURE_DURATION=$torture KISS_FUZZTIME=$fuzztime bash scripts/reliability.sh"

go test -count=1 -timeout 120m -v \
	-run '^(TestTorture|TestDamagedCacheCorpus|TestFault.*)$' ./e2e/ | grep -E '^(=== RUN|--- |PASS|FAIL|ok)' || {
	echo "reliability: the suite failed; docs/reliability.md left as it was" >&2
	exit 1
}
KISS_FUZZTIME=$fuzztime bash scripts/fuzz.sh
go run ./internal/reliability/render -dir "$results" -commit "$(git rev-parse --short HEAD)" -command "$cmd" > docs/reliability.md.new
mv docs/reliability.md.new docs/reliability.md
echo "reliability: docs/reliability.md regenerated" >&2
