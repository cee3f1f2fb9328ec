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
	// cold run of a remote store).
	listSeconds float64
}

// explore lists the store and walks the closures of roots (and, when
// youngRoots, of every narinfo younger than cutoff).
//
// With a memo, or on a local store, the listing comes first and the walk
// works on listing indices (indexWalk: array lookups for memo hits,
// parallel reads only for misses). Cold on a remote store, the listing and
// the walk run at the same time (walker), so the run costs about the longer
// of the two instead of their sum.
func explore(ctx context.Context, st storage.Store, roots []nixcache.Hash, m *memo, storeDir string, conc int, youngRoots bool, cutoff time.Time, prog Progress) (*exploration, error) {
	prog.Start(PhaseWalk, -1, -1)
	defer prog.Done(PhaseWalk)
	if m != nil || st.Capabilities().Local {
		return exploreListed(ctx, st, roots, m, storeDir, conc, youngRoots, cutoff, prog)
	}
	w := newWalker(ctx, st, storeDir, prog)
	ex := &exploration{}
	w.mu.Lock()
	w.addRoots(roots)
	w.mu.Unlock()
	var wg sync.WaitGroup
	var listErr error
	wg.Go(func() {
		t0 := time.Now()
		ix, err := list(ctx, st, prog)
		ex.listSeconds = time.Since(t0).Seconds()
		if err != nil {
			listErr = err
			w.fail(err)
			return
		}
		var youngHashes []nixcache.Hash
		if youngRoots {
			for _, e := range ix.narinfos {
				if young(e.mtime, cutoff) {
					youngHashes = append(youngHashes, e.h)
				}
			}
		}
		ex.ix, ex.young = ix, len(youngHashes)
		w.listed(ix, youngHashes)
	})
	err := w.run(conc)
	wg.Wait()
	if listErr != nil {
		return nil, listErr
	}
	if err != nil {
		return nil, err
	}
	reached := func(i int) bool {
		n, ok := w.byHash[ex.ix.narinfos[i].h]
		return ok && w.nodes[n].state == stPresent
	}
	walkMore := func(idx []int) error {
		hs := make([]nixcache.Hash, len(idx))
		for j, i := range idx {
			hs[j] = ex.ix.narinfos[i].h
		}
		w.mu.Lock()
		w.addRoots(hs)
		w.mu.Unlock()
		return w.run(conc)
	}
	n, err := youngUnknown(ctx, st, ex.ix, reached, walkMore, youngRoots, cutoff, conc, prog)
	if err != nil {
		return nil, err
	}
	ex.young += n
	g, err := w.graph(ex.ix, roots)
	if err != nil {
		return nil, err
	}
	ex.g = g
	return ex, nil
}

// exploreListed lists first, then walks by listing index.
func exploreListed(ctx context.Context, st storage.Store, roots []nixcache.Hash, m *memo, storeDir string, conc int, youngRoots bool, cutoff time.Time, prog Progress) (*exploration, error) {
	t0 := time.Now()
	ix, err := list(ctx, st, prog)
	if err != nil {
		return nil, err
	}
	ex := &exploration{ix: ix, listSeconds: time.Since(t0).Seconds()}
	if m != nil {
		m.attach(ix)
		// A memo entry is checked against its narinfo's attributes, and
		// every unreached narinfo needs its age anyway: stat them all in
		// one parallel pass, so the walk itself is array lookups.
		if err := fillAttrs(ctx, st, ix, unknownNarInfos(ix, func(int) bool { return false }), nil, conc, prog); err != nil {
			return nil, err
		}
	}
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
			if young(e.mtime, cutoff) {
				idx = append(idx, i)
				ex.young++
			}
		}
	}
	w := newIndexWalk(ctx, st, ix, m, storeDir, prog)
	if err := w.run(idx, conc); err != nil {
		return nil, err
	}
	walkMore := func(idx []int) error { return w.run(idx, conc) }
	n, err := youngUnknown(ctx, st, ix, w.g.isReach, walkMore, youngRoots, cutoff, conc, prog)
	if err != nil {
		return nil, err
	}
	ex.young += n
	w.g.missingRoots = missing
	ex.g = w.g
	return ex, nil
}

// youngUnknown finishes the roots of a keys-only listing: the narinfos the
// walk did not reach have no age yet, and the young ones are roots. It stats
// them, walks the closures of the young ones with walkMore and returns how
// many were young. Without youngRoots it does nothing: the plan stats what
// it may delete itself.
func youngUnknown(ctx context.Context, st storage.Store, ix *index, reached func(int) bool, walkMore func([]int) error, youngRoots bool, cutoff time.Time, conc int, prog Progress) (int, error) {
	if !youngRoots || !ix.partial {
		return 0, nil
	}
	unknown := unknownNarInfos(ix, reached)
	if err := fillAttrs(ctx, st, ix, unknown, nil, conc, prog); err != nil {
		return 0, err
	}
	var more []int
	for _, i := range unknown {
		if young(ix.narinfos[i].mtime, cutoff) {
			more = append(more, int(i))
		}
	}
	if len(more) > 0 {
		if err := walkMore(more); err != nil {
			return 0, err
		}
	}
	return len(more), nil
}

// unknownNarInfos lists the narinfos without attributes that are not reached.
func unknownNarInfos(ix *index, reached func(int) bool) []int32 {
	if !ix.partial {
		return nil
	}
	var out []int32
	for i := range ix.narinfos {
		if ix.narinfos[i].mtime == noTime && !reached(i) {
			out = append(out, int32(i))
		}
	}
	return out
}
