package gc

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// exploreConfig is one listing plus the walk over it: what to list, what to
// walk from, with which memo.
type exploreConfig struct {
	store    storage.Store
	storeDir string
	conc     int
	roots    []nixcache.Hash
	// memo is the stored memo (nil: walk cold); explore closes it.
	memo *memoFile
	// youngRoots: narinfos younger than cutoff are roots too.
	youngRoots bool
	cutoff     time.Time
	prog       Progress
	tmp        *tempFiles
	// pagesInFlight bounds a parallel listing (0: the default).
	pagesInFlight int
	// snapshot, if set, lists everything below a '/' (Options.Snapshot).
	snapshot Snapshot
	// warn reports what explore recovers from (a memo it cannot use).
	warn func(format string, args ...any)
	// noMemo: build no next memo (a dry run saves none).
	noMemo bool
	// noKeepSets: the walk writes no keep sets (only a prune's decide
	// reads them; a View would hold them on disk for nothing).
	noKeepSets bool
}

// exploration is what explore found: the index (with the reachable bits
// set), the next memo (the reachable graph, built from the walk) and the
// walk's counts.
type exploration struct {
	ix   *index
	memo *memoFile

	memoLoaded    bool
	keepNAR       *spool // narRefSize records (walkConfig.keepNAR)
	keepDrv       *spool // derivers' first 8 hash bytes (hashPre, read big endian)
	reachBytes    uint64
	reachable     int64
	young         int // narinfos younger than the cutoff, added as roots
	missingRoots  []nixcache.Hash
	reads         int64
	readBytes     int64
	memoHits      int64
	danglingRefs  int64
	firstProblems []string
	// quarantined: the roots whose narinfo kiss verify --quarantine moved
	// aside (each also counted in danglingRefs), as problem messages.
	quarantined []string
	listSeconds float64
}

func (ex *exploration) close() {
	if ex != nil {
		ex.ix.close()
		ex.memo.close()
	}
}

// explore lists the store, then walks the closures of the roots (and, with
// youngRoots, of every narinfo younger than the cutoff) over the listing,
// and writes what it found as the next memo.
func explore(ctx context.Context, c exploreConfig) (*exploration, error) {
	c.prog.Start(PhaseWalk, -1, -1)
	defer c.prog.Done(PhaseWalk)
	defer c.memo.close()
	t0 := time.Now()
	ix, err := list(ctx, listConfig{st: c.store, tmp: c.tmp, prog: c.prog, cutoff: c.cutoff, pagesInFlight: c.pagesInFlight, snapshot: c.snapshot,
		statNarInfos: c.memo != nil, conc: c.conc})
	if err != nil {
		return nil, err
	}
	ex := &exploration{ix: ix, listSeconds: time.Since(t0).Seconds()}
	ok := false
	defer func() {
		if !ok {
			ex.close()
		}
	}()

	var attach *memoAttach
	if c.memo != nil {
		// A memo entry is checked against its narinfo's attributes: on a
		// keys-only listing, the listing stat'ed every narinfo as it went
		// (listConfig.statNarInfos).
		if attach, err = c.memo.attach(ix); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			c.warn("closure memo ignored, rebuilding it: %v", err)
			c.memo.close()
			c.memo, attach = nil, nil
		}
		ex.memoLoaded = attach != nil
	}

	var roots []wentry
	for _, h := range c.roots {
		if id := ix.lookup(&h); id >= 0 {
			roots = append(roots, wentry{id: uint32(id), hasHash: true, h: h})
		} else {
			ex.missingRoots = append(ex.missingRoots, h)
		}
	}
	if c.youngRoots {
		for _, h := range ix.young {
			if id := ix.lookup(&h); id >= 0 {
				roots = append(roots, wentry{id: uint32(id), hasHash: true, h: h})
				ex.young++
			}
		}
	}
	ix.young = nil
	var adj *adjWriter
	if !c.noMemo {
		adj = newAdjWriter(c.tmp, ix.n)
	}
	if !c.noKeepSets {
		if ex.keepNAR, err = newSpool(c.tmp, "keep-nar"); err != nil {
			return nil, err
		}
		if ex.keepDrv, err = newSpool(c.tmp, "keep-drv"); err != nil {
			return nil, err
		}
	}
	w := newWalker(ctx, walkConfig{
		store: c.store, storeDir: c.storeDir, conc: c.conc, ix: ix,
		memo: c.memo, attach: attach, prog: c.prog, adj: adj,
		haveLogs: ix.counts[nixcache.KindLog].Objects > 0,
		keepNAR:  ex.keepNAR, keepDrv: ex.keepDrv,
	})
	if err := w.run(roots); err != nil {
		return nil, err
	}
	// Narinfos the listing did not stat (a keys-only listing without a
	// memo) that the walk did not reach have no age yet, and the young
	// ones are roots: stat them and walk from those.
	if c.youngRoots && ix.unstated > 0 {
		unreached := int64(ix.n)
		for _, v := range ix.reach {
			unreached -= int64(bits.OnesCount64(v))
		}
		more, err := statNarInfos(ctx, c, ix, unreached, func(id int, r *niRec) bool {
			return r.mtime == noTime && !ix.isReach(id)
		})
		if err != nil {
			return nil, err
		}
		var extra []wentry
		for _, h := range more {
			if id := ix.lookup(&h); id >= 0 && !ix.isReach(id) {
				extra = append(extra, wentry{id: uint32(id), hasHash: true, h: h})
			}
		}
		ex.young += len(extra)
		if err := w.run(extra); err != nil {
			return nil, err
		}
	}
	ex.reads, ex.readBytes, ex.memoHits = w.reads, w.readBytes, w.memoHits
	ex.danglingRefs, ex.firstProblems = w.danglingRefs, w.firstProblems
	if err := ex.quarantinedRoots(ctx, c.store); err != nil {
		return nil, err
	}
	ex.reachBytes = w.reachBytes
	for _, v := range ix.reach {
		ex.reachable += int64(bits.OnesCount64(v))
	}
	w = nil // free the walk before writing the next memo
	if adj != nil {
		if ex.memo, err = buildMemo(ix, adj, c.tmp); err != nil {
			return nil, err
		}
	}
	ok = true
	return ex, nil
}

// statNarInfos stats, conc at a time, the narinfos want selects (about
// total of them) and writes their attributes into the table. One that
// vanished since the listing gets goneTime: it is neither young nor
// deleted. It returns the hashes of those younger than the cutoff.
func statNarInfos(ctx context.Context, c exploreConfig, ix *index, total int64, want func(id int, r *niRec) bool) ([]nixcache.Hash, error) {
	if total <= 0 {
		return nil, nil
	}
	c.prog.Start(PhaseStat, total, -1)
	defer c.prog.Done(PhaseStat)
	cutoff := c.cutoff.UnixNano()
	var young []nixcache.Hash
	var mu sync.Mutex
	var idx []int
	err := ix.forNarInfos(true, func(start int, recs []niRec) error {
		idx = idx[:0]
		for k := range recs {
			if want(start+k, &recs[k]) {
				idx = append(idx, k)
			}
		}
		// Runs of keys through one StatMany each (file://: one fstatat a
		// key, no per-key setup).
		err := parallelRuns(ctx, len(idx), c.conc, func(ctx context.Context, start, end int) error {
			keys := make([]string, 0, end-start)
			for _, k := range idx[start:end] {
				keys = append(keys, nixcache.NarInfoKey(recs[k].h))
			}
			return storage.StatMany(ctx, c.store, keys, func(j int, o storage.Object, err error) error {
				if o, err = statResult(ctx, keys[j], o, err); err != nil {
					return err
				}
				r := &recs[idx[start+j]]
				r.setAttrs(o)
				if c.youngRoots && r.mtime > cutoff {
					mu.Lock()
					young = append(young, r.h)
					mu.Unlock()
				}
				return nil
			})
		})
		c.prog.Advance(PhaseStat, int64(len(idx)), 0)
		return err
	})
	return young, err
}

// statKey stats key; a key that vanished is a zero Object (no attributes).
func statKey(ctx context.Context, st storage.Store, key string) (storage.Object, error) {
	o, err := st.Stat(ctx, key)
	return statResult(ctx, key, o, err)
}

// statResult is what a pruner makes of a stat: a vanished key is a zero
// Object, and any other failure stops the plan (it cannot tell the age).
func statResult(ctx context.Context, key string, o storage.Object, err error) (storage.Object, error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return storage.Object{}, nil
	case err != nil:
		if ctx.Err() != nil {
			return storage.Object{}, ctx.Err()
		}
		return storage.Object{}, fmt.Errorf("%w: listing %s: %w", ErrRootsUnavailable, key, err)
	}
	return o, nil
}

// parallel runs fn(0..n-1), conc at a time, in runs of a few (a million
// stats are cheap; a million goroutines are not).
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	return parallelRuns(ctx, n, conc, func(ctx context.Context, start, end int) error {
		for i := start; i < end; i++ {
			if err := fn(ctx, i); err != nil {
				return err
			}
		}
		return nil
	})
}

// parallelRuns splits 0..n-1 into runs of up to 64 and calls fn(start,
// end) for each, conc at a time.
func parallelRuns(ctx context.Context, n, conc int, fn func(ctx context.Context, start, end int) error) error {
	if n == 0 {
		return nil
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(max(1, conc))
	run := max(1, min(64, n/max(1, conc)))
	for start := 0; start < n; start += run {
		end := min(start+run, n)
		eg.Go(func() error { return fn(ectx, start, end) })
	}
	return eg.Wait()
}

// Snapshot is a listing of a store made earlier, such as an S3 Inventory
// report (package inventory), which lists 10⁹ objects for less than paging
// through them. It can be hours old: see Options.Snapshot for how a prune
// keeps its guarantees with it.
type Snapshot interface {
	// Taken is when the listing was made, on the store's clock.
	Taken() time.Time
	// Objects yields the listed objects, with their attributes, in batches.
	Objects(ctx context.Context) iter.Seq2[[]storage.Object, error]
}

// quarantinedRoots counts, as dangling references, the roots not in the
// cache whose narinfo kiss verify --quarantine moved aside
// (nixcache.QuarantineKey): the walk cannot see what such a path
// references, so what only it keeps would go although the root names it
// and --restore needs it back. A plan refuses as for the missing NAR the
// quarantine stood for (ErrIntegrity, unless AllowDangling).
func (ex *exploration) quarantinedRoots(ctx context.Context, st storage.Store) error {
	if len(ex.missingRoots) == 0 {
		return nil
	}
	keys := make([]string, len(ex.missingRoots))
	for i, h := range ex.missingRoots {
		keys[i] = nixcache.QuarantineKey(h)
	}
	return storage.StatMany(ctx, st, keys, func(i int, _ storage.Object, err error) error {
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("%w: %s: %w", ErrRootsUnavailable, keys[i], err)
		}
		ex.danglingRefs++
		msg := fmt.Sprintf("a root names %s, whose narinfo is in quarantine (%s): what it references has no root; push the path again, kiss verify --restore it, or remove the root",
			ex.missingRoots[i], keys[i])
		ex.quarantined = append(ex.quarantined, msg)
		if len(ex.firstProblems) < 20 {
			ex.firstProblems = append(ex.firstProblems, msg)
		}
		return nil
	})
}
