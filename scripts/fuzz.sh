#!/usr/bin/env bash
# Bounded fuzzing, as CI runs it (scripts/test.sh): every Fuzz target of the
# module, one after the other, for $KISS_FUZZTIME each (default 10s). The
# seed corpora (f.Add and testdata/fuzz/<Target>/) also run as plain tests in
# every `go test`. A failure leaves the input under testdata/fuzz/ (commit it:
# it becomes a regression seed). Longer runs: KISS_FUZZTIME=10m bash scripts/fuzz.sh
# or one target: go test -run '^$' -fuzz '^FuzzLeaseBody$' -fuzztime 10m ./lockproto
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${KISS_FUZZTIME:-10s}
export GOFLAGS=${GOFLAGS:--mod=mod}
n=0
start=$(date +%s)
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in $targets; do
		echo "=== fuzz $pkg $target ($fuzztime)" >&2
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		n=$((n + 1))
	done
done
if [ "$n" -eq 0 ]; then
	echo "fuzz: no Fuzz target found" >&2
	exit 1
fi
echo "fuzz: $n targets, ${fuzztime} each, all passed in $(( $(date +%s) - start ))s" >&2
