package prune

import (
	"context"
	"errors"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

// Failure says why a prune failed, in the classes kiss prune's exit codes
// and kiss-lambda's error types name.
type Failure int

const (
	// FailStore: the store failed, cannot be reached, or lacks what the
	// lock needs; or a delete failed.
	FailStore Failure = iota
	// FailRefused: fail-closed: roots unreadable, a reachable narinfo
	// unreadable or broken, dangling references, or no roots. Nothing was
	// deleted.
	FailRefused
	// FailLocked: another prune held the lease past LockWait.
	FailLocked
	// FailLeaseLost: the lease was lost while working; deletion stopped.
	FailLeaseLost
	// FailInterrupted: ctx ended.
	FailInterrupted
	// FailUsage: the request itself is wrong (an invalid key or root).
	FailUsage
)

var failureNames = [...]string{"store", "refused", "locked", "lease-lost", "interrupted", "usage"}

func (f Failure) String() string {
	if int(f) < len(failureNames) {
		return failureNames[f]
	}
	return "unknown"
}

// Classify says why Run failed with err, ctx being the context Run was
// given.
func Classify(ctx context.Context, err error) Failure {
	switch {
	case errors.Is(err, ErrLease):
		switch {
		case lockproto.IsLocked(err):
			return FailLocked
		case ctx.Err() != nil:
			return FailInterrupted
		}
		return FailStore
	case errors.Is(err, gc.ErrFence), errors.Is(err, lockproto.ErrLeaseLost):
		return FailLeaseLost
	case ctx.Err() != nil:
		return FailInterrupted
	case errors.Is(err, gc.ErrRootsUnavailable), errors.Is(err, gc.ErrIntegrity), errors.Is(err, gc.ErrEmptyRoots), errors.Is(err, gc.ErrEmptyMarker),
		errors.Is(err, ErrNotACache):
		return FailRefused
	case errors.Is(err, storage.ErrInvalidKey), errors.Is(err, gc.ErrRootMaxAge):
		return FailUsage
	}
	return FailStore
}
