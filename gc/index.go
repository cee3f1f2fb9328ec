package gc

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// niEntry is one listed narinfo, 48 bytes.
type niEntry struct {
	h     nixcache.Hash
	fp    uint64 // fingerprint of ETag and size, validates memo entries
	mtime int64  // unix nanoseconds, store clock
	size  int64
}

// objEntry is one listed object of another kind; its key is in the arena.
type objEntry struct {
	kh    uint64 // keyHash, for NARs (0 otherwise)
	off   uint64
	n     uint32
	kind  nixcache.Kind
	mtime int64
	size  int64
}

// index is the one listing a plan is made from, held compactly.
type index struct {
	narinfos []niEntry // sorted by hash after finish
	objs     []objEntry
	arena    []byte
	// narKeys are the 64-bit hashes of every listed NAR key, sorted.
	narKeys []uint64
	counts  map[string]*Count
}

// Count is a number of objects and their bytes.
type Count struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

func (c *Count) add(size int64) { c.Objects++; c.Bytes += size }

func (ix *index) key(o *objEntry) string { return string(ix.arena[o.off : o.off+uint64(o.n)]) }

// keyHash is the 64-bit FNV-1a of a key: NAR keys are compared by it. A
// collision makes an unreferenced NAR look referenced, which keeps it.
func keyHash(k string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(k))
	return h.Sum64()
}

// fingerprint identifies one version of a narinfo for the memo.
func fingerprint(o storage.Object) uint64 {
	h := fnv.New64a()
	if o.ETag != "" {
		h.Write([]byte(o.ETag))
	} else {
		h.Write([]byte(strconv.FormatInt(o.ModTime.UnixNano(), 10)))
	}
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(o.Size, 10)))
	return h.Sum64()
}

// isDotPath reports whether any segment of rel starts with a dot (.lock/,
// .job.tmp, editor temp files): such objects are never markers.
func isDotPath(rel string) bool {
	for _, seg := range strings.Split(rel, "/") {
		if strings.HasPrefix(seg, ".") {
			return true
		}
	}
	return false
}

// list reads the whole store once.
func list(ctx context.Context, st storage.Store, prog Progress) (*index, error) {
	ix := &index{counts: map[string]*Count{}}
	prog.Start(PhaseList, -1, -1)
	defer prog.Done(PhaseList)
	var n int64
	for o, err := range st.List(ctx, "") {
		if err != nil {
			return nil, fmt.Errorf("%w: listing %s: %w", ErrRootsUnavailable, st.URL(), err)
		}
		n++
		if n%4096 == 0 {
			prog.Advance(PhaseList, 4096, 0)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		kind, h := nixcache.Classify(o.Key)
		c := ix.counts[kind.String()]
		if c == nil {
			c = &Count{}
			ix.counts[kind.String()] = c
		}
		c.add(o.Size)
		switch kind {
		case nixcache.KindNarInfo:
			ix.narinfos = append(ix.narinfos, niEntry{h: h, fp: fingerprint(o), mtime: o.ModTime.UnixNano(), size: o.Size})
			continue
		case nixcache.KindRoot, nixcache.KindCacheInfo, nixcache.KindKiss, nixcache.KindOther:
			continue
		}
		var kh uint64
		if kind == nixcache.KindNAR {
			kh = keyHash(o.Key)
			ix.narKeys = append(ix.narKeys, kh)
		}
		ix.objs = append(ix.objs, objEntry{kh: kh, off: uint64(len(ix.arena)), n: uint32(len(o.Key)), kind: kind, mtime: o.ModTime.UnixNano(), size: o.Size})
		ix.arena = append(ix.arena, o.Key...)
	}
	prog.Advance(PhaseList, n%4096, 0)
	slices.SortFunc(ix.narinfos, func(a, b niEntry) int { return bytes.Compare(a.h[:], b.h[:]) })
	slices.Sort(ix.narKeys)
	ix.narinfos = slices.Clip(ix.narinfos)
	return ix, nil
}

// find returns the listing index of the narinfo for h, or -1.
func (ix *index) find(h nixcache.Hash) int {
	i, ok := slices.BinarySearchFunc(ix.narinfos, h, func(e niEntry, h nixcache.Hash) int { return bytes.Compare(e.h[:], h[:]) })
	if !ok {
		return -1
	}
	return i
}

func hasU64(sorted []uint64, v uint64) bool {
	_, ok := slices.BinarySearch(sorted, v)
	return ok
}

func young(mtime int64, cutoff time.Time) bool { return mtime > cutoff.UnixNano() }

// listMarkers lists the marker objects: everything under gcroots/ and the
// extra prefixes, except dot-names (.lock/, temp files) at any depth.
func listMarkers(ctx context.Context, st storage.Store, prefixes []string) ([]storage.Object, error) {
	var out []storage.Object
	seen := map[string]bool{}
	for _, p := range append([]string{nixcache.RootsPrefix}, prefixes...) {
		for o, err := range st.List(ctx, p) {
			if err != nil {
				return nil, fmt.Errorf("%w: listing %s: %w", ErrRootsUnavailable, p, err)
			}
			rel := strings.TrimPrefix(o.Key, p)
			if rel == "" || isDotPath(rel) || seen[o.Key] {
				continue
			}
			seen[o.Key] = true
			out = append(out, o)
		}
	}
	return out, nil
}
