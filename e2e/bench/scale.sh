#!/usr/bin/env bash
# Scale benchmark (issue 15): kiss prune on the virtual store (internal/vstore),
# N paths generated on the fly, nothing written to a cache anywhere.
#
#   e2e/bench/scale.sh [N ...]        default: 1000000 10000000 100000000
#
# For each N, one fresh process per run (so each peak RSS is that run's):
#   list      the listing alone, every object dropped (the floor of a prune)
#   cold      dry run, no memo
#   real      real prune, no memo (the first prune); writes the memo; checked
#             against the generator's own answer (nothing live or newborn
#             deleted, no garbage left)
#   warm      dry run on the unpruned cache with the memo of "real"
#   warmreal  real prune of the unpruned cache with that memo (checked)
#   real + inventory, warmreal + inventory: the same listing below the top
#             level from the cache's inventory report (KISS_BENCH_INVENTORY=0
#             skips them)
# then prints the scale and cost-model tables (markdown) and writes a PNG plot
# of peak RSS and wall time against N.
#
# Environment:
#   KISS_BENCH_OUT      directory for results.jsonl, tables.md, scale.png
#                       (default: a temp dir, printed)
#   KISS_BENCH_TMP      the pruner's temporary files (default $TMPDIR or /tmp);
#                       about 300 bytes per path at the peak
#   KISS_BENCH_LATENCY  per-request latency for vprune -latency (default none)
#   KISS_BENCH_GOGC     also run cold and warm with this GOGC (e.g. 100), each
#                       right after its run at kiss prune's default
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000000 10000000 100000000)
OUT=${KISS_BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/kiss-scale.XXXXXX")}
TMPBASE=${KISS_BENCH_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$OUT"
WORK=$(mktemp -d "$TMPBASE/kiss-scale-work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

max=0
for n in "${SIZES[@]}"; do
  case $n in ''|*[!0-9]*) echo "usage: $0 [N ...]" >&2; exit 2;; esac
  [ "$n" -gt "$max" ] && max=$n
done
need_kb=$(( max / 1000 * 450 + 500000 ))
free_kb=$(df -Pk "$TMPBASE" | awk 'NR==2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
  echo "scale.sh: $TMPBASE has $((free_kb/1024)) MiB free, $max paths need about $((need_kb/1024)) MiB" >&2
  exit 1
fi

echo "== building vprune and report" >&2
(cd "$ROOT" && go build -o "$WORK/vprune" ./e2e/bench/scale/vprune && go build -o "$WORK/report" ./e2e/bench/scale/report)
RES="$OUT/results.jsonl"
: > "$RES"
lat=()
[ -n "${KISS_BENCH_LATENCY:-}" ] && lat=(-latency "$KISS_BENCH_LATENCY")

run() { # N STATE MODE [args...]
  local n=$1 state=$2 mode=$3; shift 3
  echo "== $n paths: $mode $*" >&2
  "$WORK/vprune" -paths "$n" -mode "$mode" -state "$state" -tmp "$WORK" "${lat[@]}" "$@" | tee -a "$RES" >&2 || {
    echo "scale.sh: $mode at $n failed" >&2; exit 1; }
}

for n in "${SIZES[@]}"; do
  s="$WORK/state-$n"; si="$WORK/state-inv-$n"
  mkdir -p "$s" "$si"
  run "$n" "$WORK/none-$n" list
  run "$n" "$WORK/none-$n" cold -answer
  [ -z "${KISS_BENCH_GOGC:-}" ] || GOGC=$KISS_BENCH_GOGC run "$n" "$WORK/none-$n" cold
  run "$n" "$s" real
  run "$n" "$s" warm
  [ -z "${KISS_BENCH_GOGC:-}" ] || GOGC=$KISS_BENCH_GOGC run "$n" "$s" warm
  run "$n" "$s" warmreal
  if [ "${KISS_BENCH_INVENTORY:-1}" != 0 ]; then
    run "$n" "$si" real -inventory
    cp "$s/overlay.json" "$si/overlay.json"; cp -r "$s/obj/." "$si/obj/"   # the memo, for the warm run
    run "$n" "$si" warmreal -inventory
  fi
  rm -rf "$s" "$si" "$WORK/none-$n"
done

"$WORK/report" -in "$RES" -png "$OUT/scale.png" > "$OUT/tables.md"
cat "$OUT/tables.md"
echo "results: $OUT (results.jsonl, tables.md, scale.png)" >&2
