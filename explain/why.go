package explain

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Link is one path of a chain, and how the previous one keeps it.
type Link struct {
	// Path is the store path, or "<hash>" when its narinfo could not be
	// read for its name.
	Path string `json:"path"`
	// Via is "reference" or "deriver"; empty for the first link (a root
	// names it).
	Via string `json:"via,omitempty"`
}

// Answer is kiss why's answer for one path.
type Answer struct {
	Path string `json:"path"`
	// Kept: a root keeps the path. Chain then runs from the path the root
	// names to Path, and Root says which root (Marker is its source, empty
	// for a young narinfo).
	Kept   bool   `json:"kept"`
	Root   string `json:"root,omitempty"`
	Marker string `json:"marker,omitempty"`
	Chain  []Link `json:"chain,omitempty"`
	// Unkept paths: when the narinfo was written, and from when the next
	// prune deletes it (its ModTime plus the grace period; a prune keeps
	// anything younger).
	ModTime     time.Time `json:"mtime,omitzero"`
	DeletableAt time.Time `json:"deletable_at,omitzero"`
	// Now and Grace are the store clock and grace the answer was judged by.
	Now   time.Time   `json:"store_now"`
	Grace gc.Duration `json:"grace"`
}

// Why says why the path with hash h is in the cache: the shortest chain from
// a root, or that nothing keeps it and when the next prune may delete it. A
// path that is not in the cache is gc.ErrNotInCache.
func Why(ctx context.Context, st storage.Store, v *gc.View, h nixcache.Hash) (*Answer, error) {
	id, ok := v.Lookup(h)
	if !ok {
		return nil, fmt.Errorf("%s: %w", nixcache.NarInfoKey(h), gc.ErrNotInCache)
	}
	a := &Answer{Path: storePath(ctx, st, v, h), Now: v.Now(), Grace: gc.Duration(v.Grace())}
	c, ok, err := v.ShortestChain(id, nil)
	if err != nil {
		return nil, err
	}
	if !ok {
		t, ok, err := v.ModTime(id)
		if err != nil {
			return nil, err
		}
		if ok {
			a.ModTime, a.DeletableAt = t, t.Add(v.Grace())
		}
		return a, nil
	}
	a.Kept, a.Root = true, v.RootName(c)
	if c.Marker >= 0 {
		a.Marker = v.Markers()[c.Marker].Source
	}
	for i, s := range c.Steps {
		l := Link{Path: storePath(ctx, st, v, s.Hash)}
		if i > 0 {
			l.Via = s.Via.String()
		}
		a.Chain = append(a.Chain, l)
	}
	return a, nil
}

// storePath names h by its narinfo's StorePath (the View keeps hashes
// only); a narinfo that cannot be read is named by its hash.
func storePath(ctx context.Context, st storage.Store, v *gc.View, h nixcache.Hash) string {
	key := nixcache.NarInfoKey(h)
	r, err := st.Get(ctx, key)
	if err != nil {
		return h.String()
	}
	defer r.Close()
	buf, err := io.ReadAll(io.LimitReader(r, nixcache.MaxNarInfoSize))
	if err != nil {
		return h.String()
	}
	ni, err := nixcache.ParseNarInfo(buf, v.StoreDir())
	if err != nil {
		return h.String()
	}
	return ni.StorePath
}
