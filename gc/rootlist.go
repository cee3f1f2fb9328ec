package gc

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// RootInfo is one marker with its age and the size of what it keeps alive.
type RootInfo struct {
	roots.Marker
	Age Duration `json:"age"`
	// ClosurePaths and ClosureBytes (sum of NAR FileSize) count the paths in
	// the cache reachable from this marker alone.
	ClosurePaths int    `json:"closure_paths"`
	ClosureBytes uint64 `json:"closure_bytes"`
	// Missing counts the marker's paths that are not in the cache.
	Missing int `json:"missing"`
}

// ListRoots reads every marker (gcroots/ and opts.RootSources) and computes
// each one's closure with the same walk (and memo) as the pruner. It never
// writes. Errors are those of NewPlan (ErrRootsUnavailable, ErrIntegrity);
// dangling references are only counted here.
func ListRoots(ctx context.Context, st storage.Store, opts Options) ([]RootInfo, error) {
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now, err := st.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: store clock: %w", ErrRootsUnavailable, err)
	}
	conc := opts.concurrency(st)
	storeDir, markers, err := loadMarkers(ctx, st, opts, now, conc)
	if err != nil {
		return nil, err
	}
	var rootPaths []nixcache.Hash
	for _, m := range markers {
		rootPaths = append(rootPaths, m.Paths...)
	}
	var mm *memo
	if !opts.NoMemo {
		if mm, err = loadMemo(ctx, st); err != nil {
			log.Warn("closure memo ignored", "err", err)
			mm = nil
		}
	}
	ex, err := explore(ctx, st, rootPaths, mm, storeDir, conc, false, now, opts.Progress)
	if err != nil {
		return nil, err
	}
	ix, g := ex.ix, ex.g
	out := make([]RootInfo, 0, len(markers))
	seen := make([]uint32, len(ix.narinfos)) // generation marks, no clearing between markers
	for gen, m := range markers {
		ri := RootInfo{Marker: m, Age: Duration(now.Sub(m.ModTime).Truncate(time.Second))}
		stack := []uint32{}
		mark := uint32(gen + 1)
		for _, h := range m.Paths {
			i := ix.find(h)
			if i < 0 {
				ri.Missing++
				continue
			}
			if seen[i] != mark {
				seen[i] = mark
				stack = append(stack, uint32(i))
			}
		}
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ri.ClosurePaths++
			ni := g.info[i]
			ri.ClosureBytes += ni.fileSize
			for _, r := range g.refs.list(ni.refOff, ni.refN) {
				if r&missingBit == 0 && seen[r] != mark {
					seen[r] = mark
					stack = append(stack, r)
				}
			}
		}
		out = append(out, ri)
	}
	return out, nil
}
