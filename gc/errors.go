package gc

import (
	"context"
	"errors"

	"github.com/kiss-cache/kiss/roots"
)

// Typed errors. cmd/kiss maps each to an exit code; all of them mean
// "nothing was deleted" when Plan returns them.
var (
	// ErrRootsUnavailable: the store could not be listed, a marker could not
	// be read, an entry under gcroots/ is not a root, or a root source does
	// not exist (roots.ErrUnavailable).
	ErrRootsUnavailable = roots.ErrUnavailable
	// ErrEmptyMarker: a marker names no store path (it is empty, or not
	// text: what a write cut short leaves), and Options.AllowEmptyMarkers
	// is false. Whatever it was meant to root would be deleted.
	ErrEmptyMarker = errors.New("a marker names no store path, or has lines that are not store paths (refusing to delete what it may have rooted; use --allow-empty-markers)")
	// ErrEmptyRoots: no root counts, and Options.AllowEmptyRoots is false.
	ErrEmptyRoots = errors.New("no gc roots (refusing to delete everything; use --allow-empty-roots)")
	// ErrIntegrity: a reachable narinfo cannot be read or parsed, does not
	// describe the path it is named for, or names a reference or NAR that is
	// not in the cache.
	ErrIntegrity = errors.New("cache integrity check failed")
	// ErrRootMaxAge: a RootMaxAge shorter than the grace period (a typo
	// such as 30m for 30d would expire every marker).
	ErrRootMaxAge = errors.New("root max age shorter than the grace period")
	// ErrFence: the lease could not be confirmed before a delete batch; the
	// wrapped error says why (lockproto.ErrLeaseLost).
	ErrFence = errors.New("lease not confirmed, deletion stopped")
	// ErrNoFence: Execute was called without a Fence.
	ErrNoFence = errors.New("gc: Execute needs a Fence (only a dry run may go without a lease)")
	// ErrDryRun: the plan was made with Options.DryRun.
	ErrDryRun = errors.New("gc: a dry-run plan is not executed")
	// ErrExecuted: a Plan is executed at most once.
	ErrExecuted = errors.New("gc: plan already executed")
)

// Fence proves, right before each delete batch, that the pruner still holds
// its exclusive lease. *lockproto.Lease satisfies it.
type Fence interface {
	Confirm(ctx context.Context) error
}
