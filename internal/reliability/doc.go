// Package reliability records what the permanent reliability suite tried and
// what held — the torture run, the fault runs, the damaged-cache corpus,
// the fuzz targets — and renders docs/reliability.md from those records, so
// the figures in the document are the figures of a run, never typed in.
//
// Tests call Record when $KISS_RELIABILITY_DIR is set (scripts/reliability.sh
// sets it); `go run ./internal/reliability/render DIR` writes the document.
package reliability
