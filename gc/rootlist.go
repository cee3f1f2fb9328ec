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
	tmp := newTempFiles(opts.TempDir)
	defer tmp.closeAll()
	var mm *memoFile
	if !opts.NoMemo {
		if mm, err = loadMemo(ctx, st, tmp); err != nil {
			log.Warn("closure memo ignored", "err", err)
			mm = nil
		}
	}
	ex, err := explore(ctx, exploreConfig{
		store: st, storeDir: storeDir, conc: conc, roots: rootPaths, memo: mm,
		cutoff: now, prog: opts.Progress, tmp: tmp, pagesInFlight: opts.ListPagesInFlight,
		warn: func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		return nil, err
	}
	defer ex.close()
	ix, m := ex.ix, ex.memo
	// The walk's graph is the new memo: entry k is the k-th reached id.
	offsets := make([]int64, 0, m.entries)
	fileSizes := make([]uint64, 0, m.entries)
	err = m.forEntries(func(_ int64, _ *nixcache.Hash, off int64, e *memoEntry) error {
		offsets = append(offsets, off)
		fileSizes = append(fileSizes, e.fileSize)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ranks := newRankDir(ix.reach)
	out := make([]RootInfo, 0, len(markers))
	seen := make([]uint32, m.entries) // generation marks, no clearing between markers
	var rb recordBuf
	var e memoEntry
	for gen, mk := range markers {
		ri := RootInfo{Marker: mk, Age: Duration(now.Sub(mk.ModTime).Truncate(time.Second))}
		var stack []int64
		mark := uint32(gen + 1)
		for _, h := range mk.Paths {
			id := ix.lookup(&h)
			if id < 0 || !ix.isReach(id) {
				ri.Missing++
				continue
			}
			if k := ranks.rank(ix.reach, uint32(id)); seen[k] != mark {
				seen[k] = mark
				stack = append(stack, int64(k))
			}
		}
		for len(stack) > 0 {
			k := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ri.ClosurePaths++
			ri.ClosureBytes += fileSizes[k]
			b, err := m.record(offsets[k], &rb)
			if err != nil {
				return nil, err
			}
			if _, err := decodeRecord(b, m.entries, &e); err != nil {
				return nil, err
			}
			for _, r := range e.refs {
				if r.entry >= 0 && seen[r.entry] != mark {
					seen[r.entry] = mark
					stack = append(stack, r.entry)
				}
			}
		}
		out = append(out, ri)
	}
	return out, nil
}
