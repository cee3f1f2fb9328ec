package explain

import (
	"cmp"
	"slices"

	"github.com/kiss-cache/kiss/gc"
)

// YoungRoot is the name Usage gives the narinfos younger than the grace
// period, which the pruner counts as roots of their own.
const YoungRoot = "(young narinfos)"

// RootUsage is what one root keeps alive. Bytes are NAR FileSize sums.
type RootUsage struct {
	// Root is the marker's source, or YoungRoot.
	Root    string `json:"root"`
	Expired bool   `json:"expired,omitempty"`
	// Paths is how many paths the root names; Missing how many of them are
	// not in the cache.
	Paths   int `json:"paths"`
	Missing int `json:"missing,omitempty"`
	// Closure is everything the root keeps; Unique the part no other root
	// keeps (what removing this root would let the next prune delete);
	// Shared = Closure - Unique.
	Closure Size `json:"closure"`
	Unique  Size `json:"unique"`
	Shared  Size `json:"shared"`
}

// Size is a number of store paths and their NAR bytes.
type Size struct {
	Paths int    `json:"paths"`
	Bytes uint64 `json:"bytes"`
}

func (s *Size) add(b uint64) { s.Paths++; s.Bytes += b }

// UsageReport is kiss du's answer.
type UsageReport struct {
	// Roots, sorted by closure bytes, largest first.
	Roots []RootUsage `json:"roots"`
	// Kept is everything some root keeps; Unkept counts the narinfos no root
	// keeps (the next prune deletes those older than the grace period; their
	// sizes are unknown: they are never read).
	Kept   Size `json:"kept"`
	Unkept int  `json:"unkept_paths"`
}

// Usage computes each root's closure over v, and which paths only it keeps.
// Expired markers are listed with empty closures: they keep nothing. The
// error is the view's (its temporary files could not be read back).
func Usage(v *gc.View) (*UsageReport, error) {
	type root struct {
		name    string
		expired bool
		named   int
		ids     []gc.PathID
	}
	markers := v.Markers()
	roots := make([]root, len(markers), len(markers)+1)
	for i, m := range markers {
		roots[i] = root{name: m.Source, expired: m.Expired, named: len(m.Paths)}
	}
	young := -1
	for mi, id := range v.RootPaths() {
		if mi < 0 {
			if young < 0 {
				young = len(roots)
				roots = append(roots, root{name: YoungRoot})
			}
			mi = young
			roots[mi].named++
		}
		roots[mi].ids = append(roots[mi].ids, id)
	}

	// The reachable graph once, as arrays: each root's walk then costs
	// array reads, not a decode of the walk's record per visit (roots
	// share most of their closures).
	n := v.Len()
	off := make([]int32, n+1)
	var to []int32
	for id := range n {
		off[id] = int32(len(to))
		edges, err := v.Edges(gc.PathID(id))
		if err != nil {
			return nil, err
		}
		for t := range edges {
			to = append(to, int32(t))
		}
	}
	off[n] = int32(len(to))

	// owner[id] is the one root that keeps id, -1 none yet, -2 several.
	owner := make([]int32, v.Len())
	for i := range owner {
		owner[i] = -1
	}
	seen := make([]uint32, v.Len()) // generation marks: no clearing per root
	out := &UsageReport{Roots: make([]RootUsage, len(roots))}
	var stack []gc.PathID
	for ri, r := range roots {
		ru := &out.Roots[ri]
		ru.Root, ru.Expired, ru.Paths = r.name, r.expired, r.named
		if ri != young {
			ru.Missing = r.named - len(r.ids)
		}
		mark := uint32(ri + 1)
		stack = stack[:0]
		for _, id := range r.ids {
			if seen[id] != mark {
				seen[id] = mark
				stack = append(stack, id)
			}
		}
		for len(stack) > 0 {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ru.Closure.add(v.FileSize(id))
			switch owner[id] {
			case -1:
				owner[id] = int32(ri)
			case int32(ri), -2:
			default:
				owner[id] = -2
			}
			for _, t := range to[off[id]:off[id+1]] {
				if seen[t] != mark {
					seen[t] = mark
					stack = append(stack, gc.PathID(t))
				}
			}
		}
	}
	for id, o := range owner {
		if o == -1 {
			out.Unkept++
			continue
		}
		b := v.FileSize(gc.PathID(id))
		out.Kept.add(b)
		if o >= 0 {
			out.Roots[o].Unique.add(b)
		}
	}
	for i := range out.Roots {
		r := &out.Roots[i]
		r.Shared = Size{Paths: r.Closure.Paths - r.Unique.Paths, Bytes: r.Closure.Bytes - r.Unique.Bytes}
	}
	slices.SortStableFunc(out.Roots, func(a, b RootUsage) int {
		if c := cmp.Compare(b.Closure.Bytes, a.Closure.Bytes); c != 0 {
			return c
		}
		return cmp.Compare(a.Root, b.Root)
	})
	return out, nil
}
