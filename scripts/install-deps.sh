#!/usr/bin/env bash
# Installs everything kiss's demo and test suite need on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Run as root.
#   apt:  nix-bin (2.8), nginx (+dav-ext), spin, openssl, curl, time, findutils,
#         chromium + a font (kiss report's page, tested headless),
#         tor (tor --verify-config and an offline tor for the NixOS Tor setup),
#         systemd (systemd-analyze verify for the NixOS modules' units), python3
#         (parses the NixOS VM test scripts), gnuplot-nox (the scale benchmark's plot)
#   go:   versitygw v1.8.0 (S3 server with conditional writes), pinned;
#         for the Terraform tests: MinIO (S3 with AWS's policy language), the
#         Lambda Runtime Interface Emulator, tflint and terraform-docs, pinned;
#         golangci-lint (the layer rules and linters of .golangci.yml), pinned
#   Terraform 1.11.4 and the AWS provider mirror (/opt/tf-plugins) come with
#   the machine image (no registry serves them here): only checked.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
# MinIO has no semver tags (and its repository is no longer maintained):
# a pseudo-version pin, the last commit this was tested with.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d
TFLINT_VERSION=v0.64.0
TFDOCS_VERSION=v0.20.0
GOLANGCI_LINT_VERSION=v2.15.0
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export GOBIN

need_apt=()
for pkg in nix-bin nginx libnginx-mod-http-dav-ext spin openssl curl time chromium fonts-dejavu-core tor systemd python3 gnuplot-nox; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
	echo "install-deps: apt-get install ${need_apt[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# A go-installed versitygw reports its version as "git"; the module version
# recorded in the binary is what was pinned.
if ! go version -m "$GOBIN/versitygw" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+$VERSITYGW_VERSION[[:space:]]"; then
	echo "install-deps: go install versitygw@$VERSITYGW_VERSION" >&2
	go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

# go_tool BIN MODULE VERSION PACKAGE: go install PACKAGE@VERSION unless BIN
# already records MODULE at VERSION.
go_tool() {
	if ! go version -m "$GOBIN/$1" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3[[:space:]]"; then
		echo "install-deps: go install $4@$3" >&2
		GOFLAGS= go install "$4@$3"
	fi
}
go_tool minio github.com/minio/minio "$MINIO_VERSION" github.com/minio/minio
go_tool aws-lambda-rie github.com/aws/aws-lambda-runtime-interface-emulator "$RIE_VERSION" \
	github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
go_tool tflint github.com/terraform-linters/tflint "$TFLINT_VERSION" github.com/terraform-linters/tflint
go_tool golangci-lint github.com/golangci/golangci-lint/v2 "$GOLANGCI_LINT_VERSION" \
	github.com/golangci/golangci-lint/v2/cmd/golangci-lint
# `go install terraform-docs@v0.20.0` stops at the module's deprecation
# lookup, which the proxy here refuses; building it in a throw-away module
# resolves the same versions from its go.mod.
if ! go version -m "$GOBIN/terraform-docs" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/terraform-docs/terraform-docs[[:space:]]+$TFDOCS_VERSION[[:space:]]"; then
	echo "install-deps: build terraform-docs $TFDOCS_VERSION" >&2
	tmp=$(mktemp -d)
	(cd "$tmp" && GOFLAGS= go mod init kiss-tfdocs >/dev/null 2>&1 &&
		GOFLAGS= go get "github.com/terraform-docs/terraform-docs@$TFDOCS_VERSION" >/dev/null 2>&1 &&
		GOFLAGS= go build -o "$GOBIN/terraform-docs" github.com/terraform-docs/terraform-docs)
	rm -rf "$tmp"
fi
if ! command -v terraform >/dev/null || [ ! -d /opt/tf-plugins/registry.terraform.io/hashicorp/aws/5.100.0 ]; then
	echo "install-deps: WARNING: terraform or the AWS provider mirror /opt/tf-plugins is missing; the Terraform tests will fail in CI" >&2
fi

echo "install-deps: ok (nix $(nix --version | awk '{print $3}'), nginx $(nginx -v 2>&1 | sed 's|.*/||'), spin $(spin -V 2>&1 | awk '{print $3}'), versitygw $VERSITYGW_VERSION, minio $MINIO_VERSION, aws-lambda-rie $RIE_VERSION, tflint $TFLINT_VERSION, terraform-docs $TFDOCS_VERSION, golangci-lint $GOLANGCI_LINT_VERSION, $(terraform version 2>/dev/null | head -1))" >&2
