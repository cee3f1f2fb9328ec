#!/usr/bin/env bash
# kiss demo: the main job on an embedded default — a local file:// cache.
#
#   bash scripts/demo.sh            # in a fresh temp dir, removed at the end
#   KISS_DEMO_DIR=/tmp/kd bash scripts/demo.sh   # kept for inspection; re-runnable
#
# On a fresh Debian 12 machine, as root, with Go installed. Steps:
#  1. install dependencies (scripts/install-deps.sh) and build kiss
#  2. a Nix 2.8 client configured in the demo dir (no /etc edits), a signing key
#  3. build two tiny closures from /bin/sh derivations (no nixpkgs)
#  4. push both, signed, each under a writer lease with `kiss with-lock`, which
#     writes a GC-root marker when the push succeeded; then drop one root
#  5. `kiss prune --dry-run --list`, then `kiss prune --grace 0s`
#  6. show what was kept
#  7. `kiss serve` on 127.0.0.1, substitute the rooted closure from it into a
#     fresh store with signature checks, check the unrooted one is gone; stop
#     the server by PID
# Any failure exits non-zero.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
step_no=0
step() { step_no=$((step_no + 1)); printf '\n\033[1m== %d. %s\033[0m\n' "$step_no" "$*"; }
info() { printf '   %s\n' "$*"; }
die() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
	die "run as root (Debian's nix-bin has no daemon; builds write /nix/store directly)"
fi

server_pid=
cleanup() {
	local rc=$?
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [ -n "${demo_tmp:-}" ]; then
		rm -rf "$demo_tmp"
	fi
	if [ $rc -ne 0 ]; then
		printf 'demo: failed (exit %d)\n' "$rc" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${KISS_DEMO_DIR:-}" ]; then
	demo=$KISS_DEMO_DIR
	mkdir -p "$demo"
	demo=$(cd "$demo" && pwd)
	# Re-runnable: start from scratch, removing only what this script makes.
	rm -rf "$demo/cache" "$demo/nix" "$demo/store-fresh" "$demo/bin" "$demo/serve.log"
else
	demo_tmp=$(mktemp -d /tmp/kiss-demo.XXXXXX)
	demo=$demo_tmp
fi
cache=$demo/cache
store_url="file://$cache"
mkdir -p "$cache" "$demo/bin" "$demo/nix"/{conf,home,cache,config,data}

step "install dependencies and build kiss"
bash "$repo/scripts/install-deps.sh"
(cd "$repo" && go build -o "$demo/bin/kiss" ./cmd/kiss)
kiss=$demo/bin/kiss
info "kiss: $kiss ($("$kiss" --version))"

step "configure a Nix client in $demo/nix (nothing in /etc is touched)"
group=
if getent group nixbld >/dev/null; then group=nixbld; fi
cat >"$demo/nix/conf/nix.conf" <<NIXCONF
experimental-features = nix-command
sandbox = false
substituters =
build-users-group = $group
narinfo-cache-positive-ttl = 0
narinfo-cache-negative-ttl = 0
NIXCONF
export NIX_CONF_DIR=$demo/nix/conf HOME=$demo/nix/home XDG_CACHE_HOME=$demo/nix/cache \
	XDG_CONFIG_HOME=$demo/nix/config XDG_DATA_HOME=$demo/nix/data NIX_PATH=
unset NIX_REMOTE
nix key generate-secret --key-name kiss-demo-1 >"$demo/nix/secret.key"
pubkey=$(nix key convert-secret-to-public <"$demo/nix/secret.key")
info "signing key: $pubkey"

step "build two tiny closures (builder /bin/sh, no nixpkgs)"
cat >"$demo/nix/demo.nix" <<'NIXEXPR'
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
in rec {
  greeting = mk "kiss-demo-greeting" "echo building greeting; mkdir $out; echo 'hello from a pruned cache' > $out/message";
  app = mk "kiss-demo-app" "echo building app; mkdir $out; printf '#!/bin/sh\\ncat ${greeting}/message\\n' > $out/hello; chmod +x $out/hello";
  scratchDep = mk "kiss-demo-scratch-dep" "echo building scratch-dep; echo 'temporary data' > $out";
  scratch = mk "kiss-demo-scratch" "echo building scratch; mkdir $out; echo ${scratchDep} > $out/uses";
}
NIXEXPR
app=$(nix-build --no-out-link "$demo/nix/demo.nix" -A app)
scratch=$(nix-build --no-out-link "$demo/nix/demo.nix" -A scratch)
info "rooted closure:   $app"
info "unrooted closure: $scratch"
nix path-info -r "$app" "$scratch" | sed 's/^/     /'

step "push both, signed, each under a writer lease (kiss with-lock), then drop one root"
# Each push sends the outputs' closure, the .drv files (what a narinfo's
# Deriver: names) and the build log, so the prune shows all of them kept
# or collected.
push_url="$store_url?compression=zstd&write-nar-listing=true&secret-key=$demo/nix/secret.key"
if "$kiss" with-lock --help >/dev/null 2>&1; then
	for pair in "demo:$app" "scratch:$scratch"; do
		name=${pair%%:*} path=${pair#*:}
		drv=$(nix-store -qd "$path")
		info "\$ kiss with-lock $store_url/gcroots/$name $path -- nix copy --to \"\$KISS_STORE?…\" $path …"
		# $KISS_STORE is set by with-lock for the command (the cache itself, or
		# an ephemeral loopback endpoint); Nix needs a URL, not a bare path
		# (a path would be a local chroot store), and the query is appended.
		# shellcheck disable=SC2016 # expanded by the inner shell
		"$kiss" with-lock "$store_url/gcroots/$name" "$path" -- sh -ec '
			s=$KISS_STORE
			case $s in /*) s=file://$s ;; esac
			case $s in *\?*) sep="&" ;; *) sep="?" ;; esac
			u="$s${sep}compression=zstd&write-nar-listing=true&secret-key=$1"
			nix copy --to "$u" "$2"
			nix copy --derivation --to "$u" "$3"
			nix store copy-log --to "$s" "$3"' sh "$demo/nix/secret.key" "$path" "$drv"
	done
else
	info "(kiss with-lock is not available in this build: plain nix copy + kiss roots add)"
	nix copy --to "$push_url" "$app" "$scratch"
	nix copy --derivation --to "$push_url" "$(nix-store -qd "$app")" "$(nix-store -qd "$scratch")"
	nix store copy-log --to "$store_url" "$(nix-store -qd "$app")" "$(nix-store -qd "$scratch")"
	"$kiss" roots add "$store_url" demo "$app"
	"$kiss" roots add "$store_url" scratch "$scratch"
fi
"$kiss" roots list "$store_url"
"$kiss" roots rm "$store_url" scratch
info "root 'scratch' removed: $scratch is now garbage"
before=$(find "$cache" -type f -not -path "$cache/.kiss/*" | wc -l)
info "$before objects in the cache"

step "kiss prune --dry-run --list (what would go; deletes nothing)"
"$kiss" prune --grace 0s --dry-run --list "$store_url"
[ "$(find "$cache" -type f -not -path "$cache/.kiss/*" | wc -l)" -eq "$before" ] || die "the dry run deleted something"

step "kiss prune --grace 0s (the objects are seconds old; the default grace would keep them)"
"$kiss" prune --grace 0s "$store_url"
after=$(find "$cache" -type f -not -path "$cache/.kiss/*" | wc -l)
info "$before objects before, $after after"
[ "$after" -lt "$before" ] || die "prune deleted nothing"

step "what was kept"
"$kiss" roots list "$store_url"
(cd "$cache" && find . -type f -not -path './.kiss/*' | sort | sed 's/^/     /')
for p in $(nix path-info -r "$app"); do
	h=$(basename "$p" | cut -d- -f1)
	[ -f "$cache/$h.narinfo" ] || die "rooted path $p lost its narinfo"
done
for p in $(nix path-info -r "$scratch"); do
	case " $(nix path-info -r "$app" | tr '\n' ' ') " in *" $p "*) continue ;; esac
	h=$(basename "$p" | cut -d- -f1)
	[ ! -f "$cache/$h.narinfo" ] || die "unrooted path $p survived"
done
info "every path of the rooted closure is there; every unrooted path is gone"

step "kiss serve on 127.0.0.1, substitute the rooted closure into a fresh store"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18099)
"$kiss" serve --store "$store_url" --listen "127.0.0.1:$port" --open-reads --read-only >"$demo/serve.log" 2>&1 &
server_pid=$!
info "kiss serve pid $server_pid on http://127.0.0.1:$port"
for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$port/nix-cache-info" >/dev/null 2>&1 && break
	kill -0 "$server_pid" 2>/dev/null || { cat "$demo/serve.log" >&2; die "kiss serve exited"; }
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/nix-cache-info" | sed 's/^/     /'
fresh=$demo/store-fresh
nix copy --from "http://127.0.0.1:$port" --to "$fresh" \
	--option trusted-public-keys "$pubkey" --option require-sigs true "$app"
info "substituted with signatures checked:"
nix path-info --store "$fresh" -r "$app" | sed 's/^/     /'
if nix copy --from "http://127.0.0.1:$port" --to "$demo/store-fresh" \
	--option trusted-public-keys "$pubkey" "$scratch" 2>/dev/null; then
	die "the unrooted closure could still be substituted"
fi
info "the unrooted closure cannot be substituted any more (as it should)"
info "$fresh$app/hello says: $(cat "$fresh$(nix-store -qR "$app" | grep greeting)/message")"

kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
info "kiss serve stopped"

printf '\ndemo: OK — cache in %s\n' "${KISS_DEMO_DIR:-a temp dir (removed)}"
