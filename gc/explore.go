package gc

import (
	"context"
	"sync"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// exploration is one listing plus the walk over it.
type exploration struct {
	ix    *index
	g     *graph
	young int // narinfos younger than the cutoff, added as roots
	// listSeconds is how long the listing took (it overlaps the walk on a
	// cold run).
	listSeconds float64
}

// explore lists the store and walks the closures of roots (and, when
// youngRoots, of every narinfo younger than cutoff). Without a memo the
// listing and the walk run at the same time, so a cold run costs about the
// longer of the two instead of their sum; with a memo the walk needs the
// listing's fingerprints first (warmWalk: array lookups for memo hits,
// parallel reads only for misses).
func explore(ctx context.Context, st storage.Store, roots []nixcache.Hash, m *memo, storeDir string, conc int, youngRoots bool, cutoff time.Time, prog Progress) (*exploration, error) {
	prog.Start(PhaseWalk, -1, -1)
	defer prog.Done(PhaseWalk)
	w := newWalker(ctx, st, storeDir, prog)
	ex := &exploration{}
	finishListing := func(ix *index) {
		var young []nixcache.Hash
		if youngRoots {
			for _, e := range ix.narinfos {
				if e.mtime > cutoff.UnixNano() {
					young = append(young, e.h)
				}
			}
		}
		ex.ix, ex.young = ix, len(young)
		w.listed(ix, young)
	}
	if m != nil {
		t0 := time.Now()
		ix, err := list(ctx, st, prog)
		ex.listSeconds = time.Since(t0).Seconds()
		if err != nil {
			return nil, err
		}
		m.attach(ix)
		ex.ix = ix
		var idx []int
		var missing []nixcache.Hash
		for _, h := range roots {
			if i := ix.find(h); i >= 0 {
				idx = append(idx, i)
			} else {
				missing = append(missing, h)
			}
		}
		if youngRoots {
			for i, e := range ix.narinfos {
				if e.mtime > cutoff.UnixNano() {
					idx = append(idx, i)
					ex.young++
				}
			}
		}
		g, err := runWarmWalk(ctx, st, ix, m, idx, storeDir, conc, prog)
		if err != nil {
			return nil, err
		}
		g.missingRoots = missing
		ex.g = g
		return ex, nil
	} else {
		w.mu.Lock()
		w.addRoots(roots)
		w.mu.Unlock()
		var wg sync.WaitGroup
		var listErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			ix, err := list(ctx, st, prog)
			ex.listSeconds = time.Since(t0).Seconds()
			if err != nil {
				listErr = err
				w.fail(err)
				return
			}
			finishListing(ix)
		}()
		err := w.run(conc)
		wg.Wait()
		if listErr != nil {
			return nil, listErr
		}
		if err != nil {
			return nil, err
		}
	}
	g, err := w.graph(ex.ix, roots)
	if err != nil {
		return nil, err
	}
	ex.g = g
	return ex, nil
}
