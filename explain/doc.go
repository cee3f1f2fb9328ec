// Package explain answers the questions an operator asks of a cache about
// what the pruner keeps, from the store alone (no database): Why (the
// shortest chain from a root to a path, or when the next prune will delete
// it) and Usage (what each root keeps alive: its closure, the part only it
// keeps and the part it shares with other roots).
//
// Both work on a gc.View, the cache as the next prune sees it (same listing,
// walk, closure memo, grace period and marker expiry), so their answers are
// the pruner's. They print nothing: cmd/kiss renders them.
package explain
