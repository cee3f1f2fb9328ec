#!/usr/bin/env bash
# Static checks of kiss's Terraform, offline: tflint (bundled terraform
# ruleset, every rule) over every module and example, and terraform-docs:
# each module's README.md must hold exactly the inputs and outputs tables
# terraform-docs renders (regenerate: terraform/check.sh --fix).
# The Terraform itself is validated, tested and planned with the real
# provider by `go test ./terraform` (terraform_test.go, minio_test.go),
# which scripts/test.sh runs with everything else.
set -euo pipefail
cd "$(dirname "$0")"

TFLINT_VERSION=v0.64.0
TFDOCS_VERSION=v0.20.0
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export GOBIN
tflint=$GOBIN/tflint
tfdocs=$GOBIN/terraform-docs

have=$("$tflint" --version 2>/dev/null || true) # captured first: no SIGPIPE under pipefail
if ! grep -qx "TFLint version ${TFLINT_VERSION#v}" <<<"$have"; then
	echo "terraform/check.sh: go install tflint@$TFLINT_VERSION" >&2
	GOFLAGS= go install "github.com/terraform-linters/tflint@$TFLINT_VERSION"
fi
have=$("$tfdocs" --version 2>/dev/null || true)
if ! grep -q "^terraform-docs version $TFDOCS_VERSION " <<<"$have"; then
	echo "terraform/check.sh: terraform-docs $TFDOCS_VERSION missing (scripts/install-deps.sh installs it)" >&2
	exit 1
fi

# tflint keeps plugins and caches under $HOME; keep the real one clean.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT

echo "terraform/check.sh: tflint $("$tflint" --version | head -1 | awk '{print $3}')" >&2
HOME=$home "$tflint" --recursive --config "$PWD/.tflint.hcl" --format compact

mode=--output-check
if [ "${1:-}" = --fix ]; then
	mode=
fi
for m in modules/*/; do
	echo "terraform/check.sh: terraform-docs ${mode:-(writing)} ${m%/}" >&2
	HOME=$home "$tfdocs" -c .terraform-docs.yml $mode "${m%/}"
done
echo "terraform/check.sh: ok" >&2
