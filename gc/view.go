package gc

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"math/bits"
	"slices"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// View is the cache as the next prune would see it, for the questions an
// operator asks of it (kiss why, kiss du) and for kiss rm: the roots, every
// listed narinfo, and the edges (References, Deriver) of every path the roots
// and the young narinfos reach. It is made by the same listing, walk and
// closure memo as a plan, and it writes nothing.
//
// It is the one door from outside gc into the walk's results: callers see
// PathIDs and iterators, never the walk's own structures, so those can change
// without breaking them.
type View struct {
	st       storage.Store
	opts     Options
	now      time.Time
	grace    time.Duration
	storeDir string
	markers  []roots.Marker
	conc     int

	tmp *tempFiles
	ix  *index
	// memo is the reachable graph (the walk's next memo): entry k is the
	// k-th reachable id (ids[k]), its record at offs[k].
	memo     *memoFile
	ranks    rankDir
	ids      []uint32
	offs     []int64
	fileSize []uint64
	young    []PathID // ascending
	// quarantined: problems of roots whose narinfo is in quarantine
	// (exploration.quarantined); a removal refuses while there are any.
	quarantined []string
}

// PathID names one listed narinfo of a View.
type PathID int32

// Edge is how a path keeps another alive.
type Edge uint8

const (
	// EdgeReference: the other path is in its References.
	EdgeReference Edge = iota
	// EdgeDeriver: the other path is its Deriver (a .drv in the cache).
	EdgeDeriver
)

func (e Edge) String() string {
	if e == EdgeDeriver {
		return "deriver"
	}
	return "reference"
}

// NewView lists st, reads the roots (gcroots/ and opts.RootSources; markers
// older than opts.RootMaxAge are flagged expired and root nothing) and walks
// the closures of the roots and of every narinfo younger than the grace
// period, as NewPlan does. Missing references and NARs are not an error
// here: a View describes a damaged cache too.
func NewView(ctx context.Context, st storage.Store, opts Options) (*View, error) {
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
	v := &View{st: st, opts: opts, now: now, grace: opts.grace(), conc: opts.concurrency(st)}
	v.storeDir, v.markers, err = loadMarkers(ctx, st, opts, now, v.conc)
	if err != nil {
		return nil, err
	}
	var rootPaths []nixcache.Hash
	for _, m := range v.markers {
		if !m.Expired {
			rootPaths = append(rootPaths, m.Paths...)
		}
	}
	v.tmp = newTempFiles(opts.TempDir)
	var m *memoFile
	if !opts.NoMemo {
		if m, err = loadMemo(ctx, st, v.tmp); err != nil {
			if ctx.Err() != nil {
				v.Close()
				return nil, ctx.Err()
			}
			log.Warn("closure memo ignored", "err", err)
			m = nil
		}
	}
	cutoff := now.Add(-v.grace)
	ex, err := explore(ctx, exploreConfig{
		store: st, storeDir: v.storeDir, conc: v.conc, roots: rootPaths, memo: m,
		youngRoots: true, cutoff: cutoff, prog: opts.Progress, tmp: v.tmp,
		pagesInFlight: opts.ListPagesInFlight, noKeepSets: true,
		warn: func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		v.Close()
		return nil, err
	}
	v.ix, v.memo, v.quarantined = ex.ix, ex.memo, ex.quarantined
	if v.ix.partial {
		// A keys-only listing left the reachable narinfos without an age
		// (the walk needs none); a young one is a root of its own here.
		var reached int64
		for _, w := range v.ix.reach {
			reached += int64(bits.OnesCount64(w))
		}
		if _, err := statNarInfos(ctx, exploreConfig{store: st, conc: v.conc, prog: opts.Progress}, v.ix, reached, func(id int, r *niRec) bool {
			return r.mtime == noTime
		}); err != nil {
			v.Close()
			return nil, err
		}
	}
	v.ranks = newRankDir(v.ix.reach)
	n := v.memo.entries
	v.ids, v.offs, v.fileSize = make([]uint32, 0, n), make([]int64, 0, n), make([]uint64, 0, n)
	for id := range v.ix.n {
		if v.ix.isReach(id) {
			v.ids = append(v.ids, uint32(id))
		}
	}
	err = v.memo.forEntries(func(_ int64, _ *nixcache.Hash, off int64, e *memoEntry) error {
		v.offs = append(v.offs, off)
		v.fileSize = append(v.fileSize, e.fileSize)
		return nil
	})
	if err == nil {
		c := cutoff.UnixNano()
		err = v.ix.forNarInfos(false, func(start int, recs []niRec) error {
			for k := range recs {
				if recs[k].mtime > c {
					v.young = append(v.young, PathID(start+k))
				}
			}
			return nil
		})
	}
	if err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// Close frees the view's temporary files; the view is unusable afterwards.
func (v *View) Close() {
	v.memo.close()
	v.tmp.closeAll()
}

// Now is the store's clock when the view was made.
func (v *View) Now() time.Time { return v.now }

// Grace is the grace period the view judged youth by.
func (v *View) Grace() time.Duration { return v.grace }

// StoreDir is the cache's store directory (nix-cache-info).
func (v *View) StoreDir() string { return v.storeDir }

// Markers are every marker read, expired ones flagged (they root nothing).
func (v *View) Markers() []roots.Marker { return v.markers }

// Len is the number of listed narinfos; PathIDs are 0..Len()-1.
func (v *View) Len() int { return v.ix.n }

// Lookup returns the PathID of the narinfo for h, if it is listed.
func (v *View) Lookup(h nixcache.Hash) (PathID, bool) {
	i := v.ix.lookup(&h)
	return PathID(i), i >= 0
}

// record reads id's narinfo record from the view's table (a pread: the
// table is a temporary file; failing to read it back is a broken disk).
func (v *View) record(id PathID) (niRec, error) {
	var b [niRecSize]byte
	var r niRec
	if _, err := v.ix.nis.f.ReadAt(b[:], int64(id)*niRecSize); err != nil {
		return r, fmt.Errorf("gc: reading back the narinfo table: %w", err)
	}
	r.get(b[:])
	return r, nil
}

// Hash is the store path hash of id. The view keeps hashes in a temporary
// file: the error is a failure to read it back.
func (v *View) Hash(id PathID) (nixcache.Hash, error) {
	r, err := v.record(id)
	return r.h, err
}

// Reachable reports whether a root or a young narinfo keeps id.
func (v *View) Reachable(id PathID) bool { return v.ix.isReach(int(id)) }

// ModTime is when id's narinfo was written, on the store's clock; ok is
// false when the store could not say (it vanished while listed).
func (v *View) ModTime(id PathID) (t time.Time, ok bool, err error) {
	r, err := v.record(id)
	if err != nil || !known(r.mtime) {
		return time.Time{}, false, err
	}
	return time.Unix(0, r.mtime), true, nil
}

// Young reports whether id is younger than the grace period, and so a root
// of its own.
func (v *View) Young(id PathID) bool {
	_, ok := slices.BinarySearch(v.young, id)
	return ok
}

// entry is the memo entry of a reachable id.
func (v *View) entry(id PathID) int64 { return int64(v.ranks.rank(v.ix.reach, uint32(id))) }

// FileSize is the NAR size id's narinfo states (0 for a path no root reaches:
// its narinfo was not read).
func (v *View) FileSize(id PathID) uint64 {
	if !v.Reachable(id) {
		return 0
	}
	return v.fileSize[v.entry(id)]
}

// Edges returns an iterator over the paths id keeps alive that are in the
// cache, with how. A path no root reaches has no known edges (its narinfo
// was not read). The edges are read when Edges is called (the walk's record
// of id, in a temporary file): the error is a failure to read it back.
func (v *View) Edges(id PathID) (iter.Seq2[PathID, Edge], error) {
	var e memoEntry
	if v.Reachable(id) {
		var rb recordBuf
		b, err := v.memo.record(v.offs[v.entry(id)], &rb)
		if err == nil {
			_, err = decodeRecord(b, v.memo.entries, &e)
		}
		if err != nil {
			return nil, fmt.Errorf("gc: reading back the walk: %w", err)
		}
	}
	return func(yield func(PathID, Edge) bool) {
		for _, r := range e.refs {
			if r.entry >= 0 && !yield(PathID(v.ids[r.entry]), EdgeReference) {
				return
			}
		}
		if e.hasDer && e.der.entry >= 0 {
			yield(PathID(v.ids[e.der.entry]), EdgeDeriver)
		}
	}, nil
}

// RootPaths iterates the PathIDs that are roots of their own: the listed
// paths of every live marker (with the marker's index in Markers) and, with
// marker index -1, every young narinfo. A path may come more than once.
func (v *View) RootPaths() iter.Seq2[int, PathID] {
	return func(yield func(int, PathID) bool) {
		for mi, m := range v.markers {
			if m.Expired {
				continue
			}
			for _, h := range m.Paths {
				if id, ok := v.Lookup(h); ok && !yield(mi, id) {
					return
				}
			}
		}
		for _, id := range v.young {
			if !yield(-1, id) {
				return
			}
		}
	}
}

// Step is one path of a Chain and the edge that led to it (the first step's
// Via is meaningless: a root leads to it).
type Step struct {
	ID   PathID
	Hash nixcache.Hash
	Via  Edge
}

// Chain is the shortest way a root keeps a path: the marker (index in
// Markers, or -1 when the first step is a young narinfo, a root of its own)
// and the paths from the one it names to the target.
type Chain struct {
	Marker int
	Steps  []Step
}

// ShortestChain finds the shortest chain from a root to target: from a
// marker if any marker keeps target, else from a young narinfo (a root only
// while it is younger than the grace period). ok is false when nothing keeps
// target. Paths for which skip is true are left out, except target itself
// when a marker names it (kiss rm asks whether anything but the paths it
// deletes keeps one: a young target roots only itself). The error is a
// failure to read the view's temporary files back.
func (v *View) ShortestChain(target PathID, skip func(PathID) bool) (Chain, bool, error) {
	if !v.Reachable(target) {
		return Chain{}, false, nil
	}
	if c, ok, err := v.chain(target, skip, false); ok || err != nil {
		return c, ok, err
	}
	return v.chain(target, skip, true)
}

// chain is a breadth-first search from every marker root (and, with young,
// every young narinfo) at once.
func (v *View) chain(target PathID, skip func(PathID) bool, young bool) (Chain, bool, error) {
	parent := make(map[PathID]int32) // -1: a root; else the PathID it came from
	via := make(map[PathID]Edge)
	rootOf := make(map[PathID]int)
	var queue []PathID
	for mi, id := range v.RootPaths() {
		if mi < 0 && !young {
			break // young narinfos come last
		}
		if skip != nil && skip(id) && (mi < 0 || id != target) {
			continue
		}
		if _, seen := parent[id]; seen {
			continue
		}
		parent[id], rootOf[id] = -1, mi
		queue = append(queue, id)
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if id == target {
			var steps []Step
			for cur := id; ; {
				h, err := v.Hash(cur)
				if err != nil {
					return Chain{}, false, err
				}
				steps = append(steps, Step{ID: cur, Hash: h, Via: via[cur]})
				p := parent[cur]
				if p < 0 {
					break
				}
				cur = PathID(p)
			}
			slices.Reverse(steps)
			return Chain{Marker: rootOf[steps[0].ID], Steps: steps}, true, nil
		}
		edges, err := v.Edges(id)
		if err != nil {
			return Chain{}, false, err
		}
		for to, e := range edges {
			if to != target && skip != nil && skip(to) {
				continue
			}
			if _, seen := parent[to]; seen {
				continue
			}
			parent[to], via[to] = int32(id), e
			queue = append(queue, to)
		}
	}
	return Chain{}, false, nil
}

// DefaultConcurrency is how many reads at once a walk of st makes when
// Options.Concurrency is 0 (kiss verify reads as the pruner does).
func DefaultConcurrency(st storage.Store) int { return Options{}.concurrency(st) }
