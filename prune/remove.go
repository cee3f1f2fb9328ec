package prune

import (
	"context"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Remove deletes the store paths paths from st now (kiss rm), under the
// prune lease and in the pruner's order (gc.View.Removal): it refuses,
// deleting nothing, while a root still keeps one of them (the error wraps
// gc.ErrRooted and is a *gc.RootedError naming the chain) or when one is not
// in the cache (gc.ErrNotInCache). With o.DryRun it takes no lease and
// deletes nothing; o.OnDeletion sees what is (or would be) deleted.
func Remove(ctx context.Context, st storage.Store, paths []nixcache.Hash, o Options) (*gc.Report, error) {
	return underLease(ctx, st, o, func(work context.Context, counted storage.Store) (*gc.Plan, error) {
		v, err := gc.NewView(work, counted, o.Options)
		if err != nil {
			return nil, err
		}
		defer v.Close() // the removal plan keeps what it needs
		plan, err := v.Removal(work, paths)
		if err == nil && o.OnDeletion != nil {
			for d := range plan.Deletions() {
				o.OnDeletion(d)
			}
		}
		return plan, err
	})
}
