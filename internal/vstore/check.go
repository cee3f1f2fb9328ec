package vstore

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Answer is the generator's own answer: what a prune with a grace period
// between ten minutes and Config.Age keeps and deletes, by kind of object
// (narinfo, ls, nar, log), computed from the shape alone.
type Answer struct {
	// NarInfos in the cache; Reachable of them from the markers and from
	// the newborns (young narinfos count as roots); Newborn narinfos.
	NarInfos, Reachable, Newborn int64
	Keep, Delete                 map[string]int64
	// Objects in the cache, markers and nix-cache-info included.
	Objects int64
}

// CheckResult compares the store's deletions with the Answer.
type CheckResult struct {
	LiveDeleted    map[string]int64 // reachable objects deleted: data loss
	NewbornDeleted map[string]int64 // newborns deleted: I3 broken
	GarbageLeft    map[string]int64 // garbage a prune should have deleted
	Deleted        int64
}

// OK reports whether nothing live or newborn was deleted and no garbage left.
func (r CheckResult) OK() bool {
	return len(r.LiveDeleted) == 0 && len(r.NewbornDeleted) == 0 && len(r.GarbageLeft) == 0
}

func (r CheckResult) String() string {
	f := func(m map[string]int64) string {
		var parts []string
		for k, v := range m {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("live deleted: %s; newborn deleted: %s; garbage left: %s; %d deleted",
		f(r.LiveDeleted), f(r.NewbornDeleted), f(r.GarbageLeft), r.Deleted)
}

// visit calls fn for every generated object with whether a prune keeps it
// and whether it is a newborn's, in parallel chunks (fn must be safe).
func (s *Store) visit(fn func(k kind, i uint64, keep, newborn bool)) {
	g := s.g
	workers := runtime.GOMAXPROCS(0)
	const chunk = 1 << 16
	var next uint64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				lo := next
				next += chunk
				mu.Unlock()
				if lo >= g.outputs {
					return
				}
				for o := lo; o < min(lo+chunk, g.outputs); o++ {
					keep, nb := g.kept(o), g.isNewborn(o)
					for _, sl := range [2]uint64{2 * o, 2*o + 1} {
						if !g.niExists(sl) {
							continue
						}
						fn(kNarinfo, sl, keep, nb)
						if g.hasLs(sl) {
							fn(kLs, sl, keep, nb)
						}
						if g.narExists(sl) {
							fn(kNAR, sl, keep, nb)
						}
					}
					if g.hasLog(o) {
						fn(kLog, o, keep, nb)
					}
				}
			}
		})
	}
	wg.Wait()
	for n := g.niSlots; n < g.narSlots; n++ {
		fn(kNAR, n, false, false)
	}
}

// Answer computes the expected outcome (a pass over every object).
func (s *Store) Answer() Answer {
	var mu sync.Mutex
	a := Answer{Keep: map[string]int64{}, Delete: map[string]int64{}}
	a.Keep["marker"] = int64(s.g.roots)
	a.Keep["nix-cache-info"] = 1
	s.visit(func(k kind, i uint64, keep, nb bool) {
		mu.Lock()
		defer mu.Unlock()
		if keep {
			a.Keep[kindNames[k]]++
		} else {
			a.Delete[kindNames[k]]++
		}
		if k == kNarinfo {
			a.NarInfos++
			if keep {
				a.Reachable++
			}
			if nb {
				a.Newborn++
			}
		}
	})
	for _, m := range []map[string]int64{a.Keep, a.Delete} {
		for _, v := range m {
			a.Objects += v
		}
	}
	return a
}

// Check compares what was deleted with the Answer.
func (s *Store) Check() CheckResult {
	r := CheckResult{LiveDeleted: map[string]int64{}, NewbornDeleted: map[string]int64{}, GarbageLeft: map[string]int64{}}
	var mu sync.Mutex
	s.visit(func(k kind, i uint64, keep, nb bool) {
		deleted := s.del[k].get(i)
		if !deleted && keep {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case deleted && keep && nb:
			r.NewbornDeleted[kindNames[k]]++
		case deleted && keep:
			r.LiveDeleted[kindNames[k]]++
		case !deleted:
			r.GarbageLeft[kindNames[k]]++
		}
		if deleted {
			r.Deleted++
		}
	})
	for i := range s.g.roots {
		if s.del[kMarker].get(i) {
			r.LiveDeleted["marker"]++
		}
	}
	if s.del[kCacheInfo].get(0) {
		r.LiveDeleted["nix-cache-info"]++
	}
	for _, m := range []*map[string]int64{&r.LiveDeleted, &r.NewbornDeleted, &r.GarbageLeft} {
		if len(*m) == 0 {
			*m = nil
		}
	}
	return r
}
