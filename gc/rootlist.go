package gc

import (
	"context"
	"time"

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
// each one's closure, through References and Deriver, with the same walk
// (and memo) as the pruner (a View with no grace period: here only markers
// are roots). It never writes. Errors are those of NewView; dangling
// references are only counted here.
func ListRoots(ctx context.Context, st storage.Store, opts Options) ([]RootInfo, error) {
	opts.Grace = -1
	v, err := NewView(ctx, st, opts)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	walk, err := NewClosures(v)
	if err != nil {
		return nil, err
	}
	out := make([]RootInfo, 0, len(v.markers))
	var start []PathID
	for _, mk := range v.markers {
		ri := RootInfo{Marker: mk, Age: Duration(v.now.Sub(mk.ModTime).Truncate(time.Second))}
		start = start[:0]
		for _, h := range mk.Paths {
			id, ok := v.Lookup(h)
			if !ok || !v.Reachable(id) {
				ri.Missing++
				continue
			}
			start = append(start, id)
		}
		walk.Walk(start, func(id PathID) {
			ri.ClosurePaths++
			ri.ClosureBytes += v.FileSize(id)
		})
		out = append(out, ri)
	}
	return out, nil
}
