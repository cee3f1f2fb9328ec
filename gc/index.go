package gc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// noTime is the mtime of a listed object whose attributes are not known yet
// (a keys-only listing, storage.KeyLister); goneTime marks one that vanished
// when it was stat'ed. Neither is ever young, and neither is deleted.
const (
	noTime   = math.MinInt64
	goneTime = math.MinInt64 + 1
)

// known reports whether an index mtime is a real one.
func known(mtime int64) bool { return mtime > goneTime }

// niEntry is one listed narinfo, 40 bytes.
type niEntry struct {
	h     nixcache.Hash
	size  int32  // bytes (a narinfo over 2 GiB counts as 2 GiB); -1 unknown
	fp    uint64 // fingerprint of ETag and size, validates memo entries
	mtime int64  // unix nanoseconds, store clock; noTime until known
}

func narinfoSize(n int64) int32 { return int32(min(n, math.MaxInt32)) }

func (e *niEntry) setAttrs(o storage.Object) {
	e.fp, e.mtime, e.size = fingerprint(o), o.ModTime.UnixNano(), narinfoSize(o.Size)
}

// objEntry is one listed object of another kind, 32 bytes; its key is in
// the arena.
type objEntry struct {
	kh    uint64 // keyHash, for NARs (0 otherwise)
	mtime int64  // noTime until known
	size  int64
	off   uint32 // in arena
	n     uint16 // key length (storage.MaxKeyLen is 1024)
	kind  nixcache.Kind
}

// index is the one listing a plan is made from, held compactly.
type index struct {
	narinfos []niEntry // sorted by hash after finish
	// slots is an open-addressing table over narinfos, keyed by the first 8
	// bytes of the hash (uniformly random), for find.
	slots []int32
	objs  chunked[objEntry]
	// arena holds the keys of objs in 1 MiB blocks.
	arena blocks[byte]
	// narKeys are the 64-bit hashes of every listed NAR key, sorted.
	narKeys []uint64
	counts  [nixcache.NumKinds]Count
	// partial is set when some listed objects came without attributes, so
	// listed byte counts cover only those whose size was read.
	partial bool
}

// Count is a number of objects and their bytes.
type Count struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

func (c *Count) add(size int64) { c.Objects++; c.Bytes += max(size, 0) }

func (ix *index) key(o *objEntry) string { return string(ix.arena.list(o.off, uint32(o.n))) }

// addKey stores k (at most storage.MaxKeyLen bytes) in the arena and
// returns its offset.
func (ix *index) addKey(k string) (uint32, error) {
	if !ix.arena.room(len(k)) {
		return 0, fmt.Errorf("gc: more than %d GiB of listed keys", 1<<(32-30))
	}
	off := ix.arena.reserve(len(k))
	b := &ix.arena.b[len(ix.arena.b)-1]
	*b = append(*b, k...)
	return off, nil
}

const (
	chunkShift = 14
	chunkLen   = 1 << chunkShift
	chunkMask  = chunkLen - 1
)

// blocks holds lists (keys' bytes, reference lists) in blocks of 2^20
// elements. A list never straddles two blocks, so it reads back as one
// slice; growing costs no copy and leaves no doubling slack (a million
// paths make tens of MiB of each). An offset is block<<blockShift |
// position, so at most 4096 blocks are addressable.
type blocks[T any] struct{ b [][]T }

const blockShift = 20

// room reports whether a list of n still fits in the addressable blocks.
func (r *blocks[T]) room(n int) bool {
	last := len(r.b) - 1
	return len(r.b) < 1<<(32-blockShift) || len(r.b[last])+n <= cap(r.b[last])
}

// reserve makes room for a list of n and returns where it starts.
func (r *blocks[T]) reserve(n int) uint32 {
	last := len(r.b) - 1
	if last < 0 || len(r.b[last])+n > cap(r.b[last]) {
		r.b = append(r.b, make([]T, 0, max(1<<blockShift, n)))
		last++
	}
	return uint32(last)<<blockShift | uint32(len(r.b[last]))
}

// push appends v to the list being built (after reserve).
func (r *blocks[T]) push(v T) {
	b := &r.b[len(r.b)-1]
	*b = append(*b, v)
}

// list returns the n elements at off.
func (r *blocks[T]) list(off, n uint32) []T {
	if n == 0 {
		return nil
	}
	at := off & (1<<blockShift - 1)
	return r.b[off>>blockShift][at : at+n]
}

// chunked is an append-only list in fixed-size blocks. It grows without
// copying and without the up-to-2× slack of append's doubling, which is
// what a million-object listing's peak memory was made of.
type chunked[T any] struct {
	blocks [][]T
	n      int
}

func (c *chunked[T]) add(v T) {
	if c.n&chunkMask == 0 {
		c.blocks = append(c.blocks, make([]T, 0, chunkLen))
	}
	b := &c.blocks[len(c.blocks)-1]
	*b = append(*b, v)
	c.n++
}

func (c *chunked[T]) at(i int) *T { return &c.blocks[i>>chunkShift][i&chunkMask] }
func (c *chunked[T]) len() int    { return c.n }

// flat copies the list into one exact-size slice, freeing each block as it
// goes.
func (c *chunked[T]) flat() []T {
	out := make([]T, 0, c.n)
	for i, b := range c.blocks {
		out = append(out, b...)
		c.blocks[i] = nil
	}
	c.blocks, c.n = nil, 0
	return out
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd[S ~string | ~[]byte](h uint64, s S) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// keyHash is the 64-bit FNV-1a of a key: NAR keys are compared by it. A
// collision makes an unreferenced NAR look referenced, which keeps it.
func keyHash(k string) uint64 { return fnvAdd(fnvOffset, k) }

// fingerprint identifies one version of a narinfo for the memo: FNV-1a of
// the ETag (or the decimal mtime if the store has none), a zero byte and the
// decimal size.
func fingerprint(o storage.Object) uint64 {
	var buf [24]byte
	h := uint64(fnvOffset)
	if o.ETag != "" {
		h = fnvAdd(h, o.ETag)
	} else {
		h = fnvAdd(h, strconv.AppendInt(buf[:0], o.ModTime.UnixNano(), 10))
	}
	h = fnvAdd(h, []byte{0})
	return fnvAdd(h, strconv.AppendInt(buf[:0], o.Size, 10))
}

// list reads the whole store once, without per-object attributes where
// the store can list keys alone (storage.KeyLister): the plan stats only
// the objects whose age it needs.
func list(ctx context.Context, st storage.Store, prog Progress) (*index, error) {
	ix := &index{}
	var narinfos chunked[niEntry]
	var narKeys chunked[uint64]
	prog.Start(PhaseList, -1, -1)
	defer prog.Done(PhaseList)
	var n int64
	for o, err := range storage.ListKeys(ctx, st, "") {
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
		mtime, size := int64(noTime), int64(-1)
		if o.HasAttrs() {
			mtime, size = o.ModTime.UnixNano(), o.Size
		} else {
			ix.partial = true
		}
		kind, h := nixcache.Classify(o.Key)
		if len(o.Key) > storage.MaxKeyLen {
			// No store operation accepts such a key (a deep path on a
			// filesystem): it can be neither read nor deleted, so it is
			// never touched.
			kind = nixcache.KindOther
		}
		ix.counts[kind].add(size)
		if kind == nixcache.KindNarInfo {
			e := niEntry{h: h, mtime: mtime, size: narinfoSize(size)}
			if o.HasAttrs() {
				e.fp = fingerprint(o)
			}
			narinfos.add(e)
			continue
		}
		if !kind.Rules().Prunable {
			continue // never deleted: no need to remember it
		}
		var kh uint64
		if kind == nixcache.KindNAR {
			kh = keyHash(o.Key)
			narKeys.add(kh)
		}
		off, err := ix.addKey(o.Key)
		if err != nil {
			return nil, err
		}
		ix.objs.add(objEntry{kh: kh, off: off, n: uint16(len(o.Key)), kind: kind, mtime: mtime, size: size})
	}
	prog.Advance(PhaseList, n%4096, 0)
	ix.narinfos = sortByHash(&narinfos)
	ix.narKeys = narKeys.flat()
	slices.Sort(ix.narKeys)
	ix.buildSlots()
	return ix, nil
}

// sortByHash sorts narinfos by hash in linear time: store path hashes are
// uniformly distributed, so a counting pass on the first 16 bits leaves a
// few entries per bucket, finished by insertion sort.
func sortByHash(in *chunked[niEntry]) []niEntry {
	starts := make([]int32, 1<<16+1)
	bucket := func(e *niEntry) int { return int(e.h[0])<<8 | int(e.h[1]) }
	for _, blk := range in.blocks {
		for i := range blk {
			starts[bucket(&blk[i])+1]++
		}
	}
	for b := 1; b < len(starts); b++ {
		starts[b] += starts[b-1]
	}
	out := make([]niEntry, in.len())
	next := slices.Clone(starts)
	for k, blk := range in.blocks {
		for i := range blk {
			b := bucket(&blk[i])
			out[next[b]] = blk[i]
			next[b]++
		}
		in.blocks[k] = nil
	}
	for b := 0; b+1 < len(starts); b++ {
		part := out[starts[b]:starts[b+1]]
		for i := 1; i < len(part); i++ {
			for j := i; j > 0 && bytes.Compare(part[j-1].h[:], part[j].h[:]) > 0; j-- {
				part[j-1], part[j] = part[j], part[j-1]
			}
		}
	}
	return out
}

func slotOf(h *nixcache.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// buildSlots fills the find table: a power of two at least twice the
// narinfo count, linear probing.
func (ix *index) buildSlots() {
	size := 16
	for size < 2*len(ix.narinfos) {
		size *= 2
	}
	ix.slots = make([]int32, size)
	for i := range ix.slots {
		ix.slots[i] = -1
	}
	mask := uint64(size - 1)
	for i := range ix.narinfos {
		for j := slotOf(&ix.narinfos[i].h) & mask; ; j = (j + 1) & mask {
			if ix.slots[j] < 0 {
				ix.slots[j] = int32(i)
				break
			}
		}
	}
}

// find returns the listing index of the narinfo for h, or -1.
func (ix *index) find(h nixcache.Hash) int {
	if len(ix.slots) == 0 {
		return -1
	}
	mask := uint64(len(ix.slots) - 1)
	for j := slotOf(&h) & mask; ; j = (j + 1) & mask {
		i := ix.slots[j]
		if i < 0 {
			return -1
		}
		if ix.narinfos[i].h == h {
			return int(i)
		}
	}
}

func hasU64(sorted []uint64, v uint64) bool {
	_, ok := slices.BinarySearch(sorted, v)
	return ok
}

func young(mtime int64, cutoff time.Time) bool { return mtime > cutoff.UnixNano() }
