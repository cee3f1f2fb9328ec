#!/usr/bin/env bash
# Offline checks of kiss's Terraform: tflint (bundled terraform ruleset,
# every rule) over every module and example, then the Go tests in this
# directory (hcl/v2 + terraform-config-inspect: formatting, interface,
# bucket protections, bucket policy, IAM separation), and `tofu fmt -check`
# when tofu happens to be installed. Installs tflint if it is missing.
# `tofu validate`/`plan` need the AWS provider from a registry: run them on
# a machine with registry access (docs/terraform.md).
set -euo pipefail
cd "$(dirname "$0")"

TFLINT_VERSION=v0.64.0
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export GOBIN
tflint=$GOBIN/tflint

have=$("$tflint" --version 2>/dev/null || true) # captured first: no SIGPIPE under pipefail
if ! grep -qx "TFLint version ${TFLINT_VERSION#v}" <<<"$have"; then
	echo "terraform/check.sh: go install tflint@$TFLINT_VERSION" >&2
	GOFLAGS= go install "github.com/terraform-linters/tflint@$TFLINT_VERSION"
fi

# tflint keeps plugins and caches under $HOME; keep the real one clean.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT

echo "terraform/check.sh: tflint $("$tflint" --version | head -1 | awk '{print $3}')" >&2
HOME=$home "$tflint" --recursive --config "$PWD/.tflint.hcl" --format compact

echo "terraform/check.sh: go test (separate module github.com/kiss-cache/kiss/terraform)" >&2
GOFLAGS=-mod=mod go vet ./...
GOFLAGS=-mod=mod go test -count=1 ./...

if command -v tofu >/dev/null 2>&1; then
	echo "terraform/check.sh: tofu fmt -check" >&2
	HOME=$home tofu fmt -check -recursive
fi
echo "terraform/check.sh: ok" >&2
