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

	walk, err := gc.NewClosures(v)
	if err != nil {
		return nil, err
	}
	// owner[id] is the one root that keeps id, -1 none yet, -2 several.
	owner := make([]int32, v.Len())
	for i := range owner {
		owner[i] = -1
	}
	out := &UsageReport{Roots: make([]RootUsage, len(roots))}
	for ri, r := range roots {
		ru := &out.Roots[ri]
		ru.Root, ru.Expired, ru.Paths = r.name, r.expired, r.named
		if ri != young {
			ru.Missing = r.named - len(r.ids)
		}
		walk.Walk(r.ids, func(id gc.PathID) {
			ru.Closure.add(v.FileSize(id))
			switch owner[id] {
			case -1:
				owner[id] = int32(ri)
			case int32(ri), -2:
			default:
				owner[id] = -2
			}
		})
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
