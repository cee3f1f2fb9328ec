package gc

import (
	"cmp"
	"encoding/binary"
	"slices"

	"github.com/kiss-cache/kiss/nixcache"
)

// On a local store (file://) a pruner's delete time is its unlinks, and an
// unlink costs more when it goes against the directory's own order: half a
// million garbage narinfos took 2.5–2.7 s to unlink in the order getdents
// returned them and 3.5–4.0 s in hash order (id order, the order decide
// finds them in; docs/benchmarks.md, "unlink order"). So there the garbage
// narinfos are deleted in listing order: decide hands each to a
// listingOrder, which spreads them over temporary files by listing position
// and gives them back in that order, one file sorted in memory at a time.

// listingOrder puts narinfo deletions back in listing order.
type listingOrder struct {
	buckets []*spool
	// per is the listing positions one bucket covers.
	per  uint32
	data []byte
	buf  []posRec
}

// posRec is a garbage narinfo: where the listing named it, its size, its hash.
type posRec struct {
	pos  uint32
	size int32
	h    nixcache.Hash
}

const posRecSize = 4 + 4 + 20

// posChunk bounds the bytes of position records sorted in memory at once.
var posChunk int64 = 4 << 20

func newListingOrder(tmp *tempFiles, narinfos int) (*listingOrder, error) {
	// Sized as if every narinfo were garbage: each bucket fits posChunk.
	n := max(1, (int64(narinfos)*posRecSize+posChunk-1)/posChunk)
	buckets, err := newBuckets(tmp, "narinfo-deletions", int(n))
	if err != nil {
		return nil, err
	}
	return &listingOrder{buckets: buckets, per: max(1, uint32((int64(narinfos)+n-1)/n))}, nil
}

// add queues the narinfo r for deletion.
func (lo *listingOrder) add(r *niRec) error {
	var b [posRecSize]byte
	binary.LittleEndian.PutUint32(b[0:], r.pos)
	binary.LittleEndian.PutUint32(b[4:], uint32(r.size))
	copy(b[8:], r.h[:])
	i := min(int(r.pos/lo.per), len(lo.buckets)-1)
	return lo.buckets[i].write(b[:])
}

// each calls fn with every queued narinfo in listing order.
func (lo *listingOrder) each(fn func(r *posRec) error) error {
	for _, b := range lo.buckets {
		if err := b.finish(); err != nil {
			return err
		}
		data, err := b.readAll(lo.data)
		lo.data = data
		if err != nil {
			return err
		}
		b.f.Close()
		k := len(data) / posRecSize
		recs := slices.Grow(lo.buf[:0], k)[:k]
		for i := range recs {
			d := data[i*posRecSize:]
			recs[i] = posRec{pos: binary.LittleEndian.Uint32(d), size: int32(binary.LittleEndian.Uint32(d[4:]))}
			copy(recs[i].h[:], d[8:posRecSize])
		}
		slices.SortFunc(recs, func(a, b posRec) int { return cmp.Compare(a.pos, b.pos) })
		for i := range recs {
			if err := fn(&recs[i]); err != nil {
				return err
			}
		}
		lo.buf = recs
	}
	return nil
}
