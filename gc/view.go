package gc

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
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
	ix       *index
	g        *graph
	now      time.Time
	grace    time.Duration
	storeDir string
	markers  []roots.Marker
	conc     int
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
	var roots []nixcache.Hash
	for _, m := range v.markers {
		if !m.Expired {
			roots = append(roots, m.Paths...)
		}
	}
	var m *memo
	if !opts.NoMemo {
		if m, err = loadMemo(ctx, st); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			log.Warn("closure memo ignored", "err", err)
			m = nil
		}
	}
	ex, err := explore(ctx, st, roots, m, v.storeDir, v.conc, true, now.Add(-v.grace), opts.Progress)
	if err != nil {
		return nil, err
	}
	v.ix, v.g = ex.ix, ex.g
	return v, nil
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
func (v *View) Len() int { return len(v.ix.narinfos) }

// Lookup returns the PathID of the narinfo for h, if it is listed.
func (v *View) Lookup(h nixcache.Hash) (PathID, bool) {
	i := v.ix.find(h)
	return PathID(i), i >= 0
}

// Hash is the store path hash of id.
func (v *View) Hash(id PathID) nixcache.Hash { return v.ix.narinfos[id].h }

// Reachable reports whether a root or a young narinfo keeps id.
func (v *View) Reachable(id PathID) bool { return v.g.isReach(int(id)) }

// ModTime is when id's narinfo was written, on the store's clock; ok is
// false when the store could not say (it vanished while listed).
func (v *View) ModTime(id PathID) (t time.Time, ok bool) {
	m := v.ix.narinfos[id].mtime
	if !known(m) {
		return time.Time{}, false
	}
	return time.Unix(0, m), true
}

// Young reports whether id is younger than the grace period, and so a root
// of its own.
func (v *View) Young(id PathID) bool {
	return young(v.ix.narinfos[id].mtime, v.now.Add(-v.grace))
}

// FileSize is the NAR size id's narinfo states (0 for a path no root reaches:
// its narinfo was not read).
func (v *View) FileSize(id PathID) uint64 {
	if !v.Reachable(id) {
		return 0
	}
	return v.g.info[id].fileSize
}

// Edges iterates the paths id keeps alive that are in the cache, with how.
// A path no root reaches has no known edges (its narinfo was not read).
func (v *View) Edges(id PathID) iter.Seq2[PathID, Edge] {
	return func(yield func(PathID, Edge) bool) {
		if !v.Reachable(id) {
			return
		}
		ni := v.g.info[id]
		for _, r := range v.g.refs.list(ni.refOff, ni.refN) {
			if r&missingBit == 0 && !yield(PathID(r), EdgeReference) {
				return
			}
		}
		if d := ni.deriver; d != noRef && d&missingBit == 0 {
			yield(PathID(d), EdgeDeriver)
		}
	}
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
		for i := range v.ix.narinfos {
			if v.Young(PathID(i)) && !yield(-1, PathID(i)) {
				return
			}
		}
	}
}

// Step is one path of a Chain and the edge that led to it (the first step's
// Via is meaningless: a root leads to it).
type Step struct {
	ID  PathID
	Via Edge
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
// deletes keeps one: a young target roots only itself).
func (v *View) ShortestChain(target PathID, skip func(PathID) bool) (Chain, bool) {
	if !v.Reachable(target) {
		return Chain{}, false
	}
	if c, ok := v.chain(target, skip, false); ok {
		return c, true
	}
	return v.chain(target, skip, true)
}

// chain is a breadth-first search from every marker root (and, with young,
// every young narinfo) at once.
func (v *View) chain(target PathID, skip func(PathID) bool, young bool) (Chain, bool) {
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
				steps = append(steps, Step{ID: cur, Via: via[cur]})
				p := parent[cur]
				if p < 0 {
					break
				}
				cur = PathID(p)
			}
			slices.Reverse(steps)
			return Chain{Marker: rootOf[steps[0].ID], Steps: steps}, true
		}
		for to, e := range v.Edges(id) {
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
	return Chain{}, false
}

// DefaultConcurrency is how many reads at once a walk of st makes when
// Options.Concurrency is 0 (kiss verify reads as the pruner does).
func DefaultConcurrency(st storage.Store) int { return Options{}.concurrency(st) }
