#!/usr/bin/env bash
# Installs everything kiss's demo and test suite need on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Run as root.
#   apt:  nix-bin (2.8), nginx (+dav-ext), spin, openssl, curl, time, findutils,
#         chromium + a font (kiss report's page, tested headless),
#         tor (tor --verify-config and an offline tor for the NixOS Tor setup),
#         systemd (systemd-analyze verify for the NixOS modules' units), python3
#         (parses the NixOS VM test scripts)
#   go:   versitygw v1.8.0 (S3 server with conditional writes), pinned
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export GOBIN

need_apt=()
for pkg in nix-bin nginx libnginx-mod-http-dav-ext spin openssl curl time chromium fonts-dejavu-core tor systemd python3; do
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

echo "install-deps: ok (nix $(nix --version | awk '{print $3}'), nginx $(nginx -v 2>&1 | sed 's|.*/||'), spin $(spin -V 2>&1 | awk '{print $3}'), versitygw $VERSITYGW_VERSION)" >&2
