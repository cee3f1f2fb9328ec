package gc

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"strconv"
	"strings"
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

func young(mtime int64, cutoff time.Time) bool { return mtime > cutoff.UnixNano() }

// index is the one listing a plan is made from.
//
// Narinfos are numbered by hash order (their id). The heap holds 12 bytes of
// each hash (pre, chk: ids are found by hash through a directory over pre)
// and a reachability bit; the rest of what the listing said about them
// (full hash, size, mtime, fingerprint) is a file of fixed records in id
// order, read sequentially. Every other object is a record in a second file,
// in listing order. So the heap grows by about 12.5 bytes per narinfo
// whatever the size of the cache, and the files are read a pass at a time.
type index struct {
	n   int      // narinfos
	pre []uint64 // big-endian hash[0:8], ascending with chk
	chk []uint32 // big-endian hash[8:12]
	// dir[j] is the first id whose pre has top bits j (dirBits of them).
	dir     []uint32
	dirBits uint
	reach   []uint64 // bitset over ids: reached by the walk

	nis   *spool // niRecSize records in id order
	objs  *spool // objRec records, listing order
	nObjs int64

	counts [nixcache.NumKinds]Count
	// partial is set when some listed objects came without attributes, so
	// listed byte counts cover only those whose size was read.
	partial bool
	// young are the narinfos the listing showed younger than the cutoff.
	young []nixcache.Hash
	// unstated: narinfos listed without attributes and not stat'ed yet.
	unstated int64
}

// Count is a number of objects and their bytes.
type Count struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

func (c *Count) add(size int64) { c.Objects++; c.Bytes += max(size, 0) }

// niRec is one listed narinfo: hash, size, mtime, fingerprint, and where
// the listing named it.
type niRec struct {
	h     nixcache.Hash
	size  int32 // bytes (a narinfo over 2 GiB counts as 2 GiB); -1 unknown
	mtime int64 // unix nanoseconds, store clock; noTime until known
	fp    uint64
	pos   uint32 // the listing's n-th narinfo
}

const niRecSize = 20 + 4 + 8 + 8 + 4

func (r *niRec) put(b []byte) {
	copy(b, r.h[:])
	binary.LittleEndian.PutUint32(b[20:], uint32(r.size))
	binary.LittleEndian.PutUint64(b[24:], uint64(r.mtime))
	binary.LittleEndian.PutUint64(b[32:], r.fp)
	binary.LittleEndian.PutUint32(b[40:], r.pos)
}

func (r *niRec) get(b []byte) {
	copy(r.h[:], b)
	r.size = int32(binary.LittleEndian.Uint32(b[20:]))
	r.mtime = int64(binary.LittleEndian.Uint64(b[24:]))
	r.fp = binary.LittleEndian.Uint64(b[32:])
	r.pos = binary.LittleEndian.Uint32(b[40:])
}

func (r *niRec) setAttrs(o storage.Object) {
	if !o.HasAttrs() {
		r.mtime = goneTime
		return
	}
	r.fp, r.mtime, r.size = fingerprint(o), o.ModTime.UnixNano(), narinfoSize(o.Size)
}

func narinfoSize(n int64) int32 { return int32(min(n, math.MaxInt32)) }

// objRec is one listed object of another kind: kind, mtime, size, key.
type objRec struct {
	kind  nixcache.Kind
	mtime int64 // noTime until known
	size  int64
	key   string
	// snap: the attributes are a snapshot's (an S3 Inventory): the object
	// is stat'ed again right before it is deleted.
	snap bool
}

const snapBit = 0x80

const objRecHead = 1 + 8 + 8 + 2

func appendObjRec(b []byte, o *objRec) []byte {
	k := byte(o.kind)
	if o.snap {
		k |= snapBit
	}
	b = append(b, k)
	b = binary.LittleEndian.AppendUint64(b, uint64(o.mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(o.size))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(o.key)))
	return append(b, o.key...)
}

// readObjRec reads the next record into o (o.key is a new string).
func readObjRec(r *bufio.Reader, head []byte, o *objRec) error {
	if _, err := io.ReadFull(r, head[:objRecHead]); err != nil {
		return err
	}
	o.kind, o.snap = nixcache.Kind(head[0]&^snapBit), head[0]&snapBit != 0
	o.mtime = int64(binary.LittleEndian.Uint64(head[1:]))
	o.size = int64(binary.LittleEndian.Uint64(head[9:]))
	n := int(binary.LittleEndian.Uint16(head[17:]))
	key := make([]byte, n)
	if _, err := io.ReadFull(r, key); err != nil {
		return unexpected(err)
	}
	o.key = string(key)
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
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

// hashPre and hashChk are the parts of a hash the heap keeps.
func hashPre(h *nixcache.Hash) uint64 { return binary.BigEndian.Uint64(h[:8]) }
func hashChk(h *nixcache.Hash) uint32 { return binary.BigEndian.Uint32(h[8:12]) }

// lookup returns the id of the narinfo for h, or -1. Two listed hashes that
// agree on their first 96 bits are refused when the index is built, so 96
// bits identify a listed narinfo; a hash that is not listed but shares 96
// bits with one that is (a chance of about n·2⁻⁹⁶) is taken for it, which
// can only keep more.
func (ix *index) lookup(h *nixcache.Hash) int {
	if ix.n == 0 {
		return -1
	}
	p, c := hashPre(h), hashChk(h)
	j := p >> (64 - ix.dirBits)
	for i := ix.dir[j]; i < ix.dir[j+1]; i++ {
		if ix.pre[i] == p && ix.chk[i] == c {
			return int(i)
		}
		if ix.pre[i] > p {
			break
		}
	}
	return -1
}

func (ix *index) isReach(i int) bool { return ix.reach[i/64]&(1<<(i%64)) != 0 }
func (ix *index) setReach(i int)     { ix.reach[i/64] |= 1 << (i % 64) }

// reachable reports whether h is listed and reached.
func (ix *index) reachable(h *nixcache.Hash) bool {
	i := ix.lookup(h)
	return i >= 0 && ix.isReach(i)
}

// hashOf reads the full hash of id i (a pread: the walk needs it only for
// narinfos it did not learn of by hash).
func (ix *index) hashOf(i int) (nixcache.Hash, error) {
	var b [20]byte
	if _, err := ix.nis.f.ReadAt(b[:], int64(i)*niRecSize); err != nil {
		return nixcache.Hash{}, fmt.Errorf("gc: reading the narinfo table: %w", err)
	}
	return nixcache.Hash(b), nil
}

// narInfoChunk is how many narinfo records a pass reads at a time.
const narInfoChunk = 4096

// forNarInfos calls fn with every narinfo record in id order, a chunk at a
// time (recs[k] is id start+k). With update, the records are written back
// after fn.
func (ix *index) forNarInfos(update bool, fn func(start int, recs []niRec) error) error {
	buf := make([]byte, narInfoChunk*niRecSize)
	recs := make([]niRec, narInfoChunk)
	for start := 0; start < ix.n; start += narInfoChunk {
		n := min(narInfoChunk, ix.n-start)
		b := buf[:n*niRecSize]
		off := int64(start) * niRecSize
		if _, err := ix.nis.f.ReadAt(b, off); err != nil {
			return fmt.Errorf("gc: reading the narinfo table: %w", err)
		}
		for k := range n {
			recs[k].get(b[k*niRecSize:])
		}
		if err := fn(start, recs[:n]); err != nil {
			return err
		}
		if update {
			for k := range n {
				recs[k].put(b[k*niRecSize:])
			}
			if _, err := ix.nis.f.WriteAt(b, off); err != nil {
				return fmt.Errorf("gc: writing the narinfo table: %w", err)
			}
		}
	}
	return nil
}

// forObjects calls fn for every other listed object, in listing order.
func (ix *index) forObjects(fn func(o *objRec) error) error {
	r := ix.objs.reader()
	head := make([]byte, objRecHead)
	var o objRec
	for {
		err := readObjRec(r, head, &o)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("gc: reading the object list: %w", err)
		}
		if err := fn(&o); err != nil {
			return err
		}
	}
}

// forObjectChunks calls fn with the other listed objects, in listing order,
// size at a time. The next chunk is read while fn works on one (a second
// goroutine; fn must not keep a chunk after it returns).
func (ix *index) forObjectChunks(ctx context.Context, size int, fn func([]objRec) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	full := make(chan []objRec, 1)
	free := make(chan []objRec, 2)
	free <- make([]objRec, 0, size)
	free <- make([]objRec, 0, size)
	readErr := make(chan error, 1)
	go func() {
		defer close(full)
		var chunk []objRec
		next := func() bool {
			select {
			case chunk = <-free:
				chunk = chunk[:0]
				return true
			case <-ctx.Done():
				return false
			}
		}
		if !next() {
			readErr <- ctx.Err()
			return
		}
		err := ix.forObjects(func(o *objRec) error {
			chunk = append(chunk, *o)
			if len(chunk) < size {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			select {
			case full <- chunk:
			case <-ctx.Done():
				return ctx.Err()
			}
			if !next() {
				return ctx.Err()
			}
			return nil
		})
		if err == nil {
			err = ctx.Err()
		}
		if err == nil && len(chunk) > 0 {
			select {
			case full <- chunk:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		readErr <- err
	}()
	for chunk := range full {
		err := ctx.Err()
		if err == nil {
			err = fn(chunk)
		}
		if err != nil {
			cancel()
			for range full { // let the reader stop
			}
			return err
		}
		free <- chunk
	}
	return <-readErr
}

// listConfig is how a store is listed.
type listConfig struct {
	st   storage.Store
	tmp  *tempFiles
	prog Progress
	// cutoff: narinfos listed younger than it are collected in index.young.
	cutoff time.Time
	// pagesInFlight bounds a parallel listing (storage.ListParallel).
	pagesInFlight int
	// snapshot, if set, lists everything below a '/' instead of the store.
	snapshot Snapshot
	// statNarInfos: stat every narinfo listed without attributes while the
	// listing goes on, conc at a time (a warm run needs them all: the memo
	// is checked against them, and the unreached ones need their age).
	statNarInfos bool
	conc         int
}

// topLevel reports whether key is at the top of the cache (narinfos, .ls,
// nix-cache-info), which a prune with a snapshot lists live.
func topLevel(key string) bool { return !strings.Contains(key, "/") }

// otherSource reports whether key, listed by the live listing (snap false)
// or the snapshot (snap true), is the other source's to list: with a
// snapshot, the top level is listed live and everything below it comes from
// the snapshot.
func (lc *listConfig) otherSource(key string, snap bool) bool {
	return lc.snapshot != nil && topLevel(key) == snap
}

// listedBatch is one batch on its way from the listing to the index: each
// object classified and, with listConfig.statNarInfos, its narinfos'
// attributes stat'ed, off the goroutine that builds the index.
type listedBatch struct {
	objs   []storage.Object
	snap   bool
	kinds  []nixcache.Kind
	hashes []nixcache.Hash // of the narinfos, in order
	gone   []int           // narinfos (objs indexes) that vanished when stat'ed
	done   chan error
	// scratch for the stat
	keys []string
	idx  []int
}

// prepare classifies b's objects and stats those of its narinfos that came
// without attributes, if lc says so.
func (lc *listConfig) prepare(ctx context.Context, b *listedBatch) error {
	b.kinds, b.hashes, b.gone = b.kinds[:0], b.hashes[:0], b.gone[:0]
	b.keys, b.idx = b.keys[:0], b.idx[:0]
	for i := range b.objs {
		o := &b.objs[i]
		kind, h := nixcache.Classify(o.Key)
		if len(o.Key) > storage.MaxKeyLen {
			// No store operation accepts such a key (a deep path on a
			// filesystem): it can be neither read nor deleted, so it is
			// never touched.
			kind = nixcache.KindOther
		}
		b.kinds = append(b.kinds, kind)
		if kind != nixcache.KindNarInfo {
			continue
		}
		b.hashes = append(b.hashes, h)
		if lc.statNarInfos && !o.HasAttrs() && !lc.otherSource(o.Key, b.snap) {
			b.keys, b.idx = append(b.keys, o.Key), append(b.idx, i)
		}
	}
	if len(b.keys) == 0 {
		return nil
	}
	return storage.StatMany(ctx, lc.st, b.keys, func(j int, o storage.Object, err error) error {
		if o, err = statResult(ctx, b.keys[j], o, err); err != nil {
			return err
		}
		i := b.idx[j]
		if !o.HasAttrs() {
			b.gone = append(b.gone, i)
			return nil
		}
		o.Key = b.objs[i].Key
		b.objs[i] = o
		return nil
	})
}

// list reads the whole store once: by ranges in parallel where the store
// lists by pages (S3), without per-object attributes where it can list keys
// alone (file://: the plan stats only the objects whose age it needs).
// Batches are classified (and stat'ed, see listConfig.statNarInfos) conc
// at a time while the listing goes on, and added to the index in listing
// order by one goroutine.
func list(ctx context.Context, lc listConfig) (*index, error) {
	st := lc.st
	ix := &index{}
	prog := lc.prog
	prog.Start(PhaseList, -1, -1)
	defer prog.Done(PhaseList)
	var err error
	if ix.objs, err = newSpool(lc.tmp, "objects"); err != nil {
		return nil, err
	}
	all, err := newSpool(lc.tmp, "narinfos")
	if err != nil {
		return nil, err
	}
	var rec [niRecSize]byte
	var buf []byte
	cutoff := lc.cutoff.UnixNano()
	add := func(b *listedBatch) error {
		nis, gone := 0, 0
		for i := range b.objs {
			o := &b.objs[i]
			kind := b.kinds[i]
			var h nixcache.Hash
			if kind == nixcache.KindNarInfo {
				h = b.hashes[nis]
				nis++
			}
			if lc.otherSource(o.Key, b.snap) {
				continue // the other source has it
			}
			mtime, size := int64(noTime), int64(-1)
			if o.HasAttrs() {
				mtime, size = o.ModTime.UnixNano(), o.Size
			} else {
				ix.partial = true
			}
			ix.counts[kind].add(size)
			switch {
			case kind == nixcache.KindNarInfo:
				r := niRec{h: h, mtime: mtime, size: narinfoSize(size), pos: uint32(ix.n)}
				if o.HasAttrs() {
					r.fp = fingerprint(*o)
					if mtime > cutoff {
						ix.young = append(ix.young, h)
					}
				} else if gone < len(b.gone) && b.gone[gone] == i {
					r.mtime = goneTime
					gone++
				} else {
					ix.unstated++
				}
				r.put(rec[:])
				if err := all.write(rec[:]); err != nil {
					return err
				}
				ix.n++
			case kind.Rules().Prunable: // anything else is never deleted: no need to remember it
				buf = appendObjRec(buf[:0], &objRec{kind: kind, mtime: mtime, size: size, key: o.Key, snap: b.snap})
				if err := ix.objs.write(buf); err != nil {
					return err
				}
				ix.nObjs++
			}
		}
		prog.Advance(PhaseList, int64(len(b.objs)), 0)
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Stats may wait on the disk: lc.conc of them at once. Classifying
	// alone only needs the CPUs, and each batch in flight is memory.
	conc := max(1, lc.conc)
	if !lc.statNarInfos {
		conc = min(conc, runtime.GOMAXPROCS(0))
	}
	// free recycles batches (their scratch slices); queue is the listing
	// order; each batch's done says when prepare is through with it.
	free := make(chan *listedBatch, conc+1)
	queue := make(chan *listedBatch, conc)
	added := make(chan error, 1)
	go func() {
		var err error
		for b := range queue {
			if perr := <-b.done; err == nil {
				err = perr
			}
			if err == nil {
				err = add(b)
			}
			if err != nil {
				cancel()
			}
			b.objs = nil
			select {
			case free <- b:
			default:
			}
		}
		added <- err
	}()
	sem := make(chan struct{}, conc)
	submit := func(objs []storage.Object, snap bool) {
		var b *listedBatch
		select {
		case b = <-free:
		default:
			b = &listedBatch{done: make(chan error, 1)}
		}
		b.objs, b.snap = objs, snap
		sem <- struct{}{}
		queue <- b
		go func() {
			b.done <- lc.prepare(ctx, b)
			<-sem
		}()
	}
	// finish waits for the batches in flight. An error of theirs comes
	// first: it cancelled the listing, whose own error would only say so.
	finish := func(listErr error) error {
		close(queue)
		if err := <-added; err != nil {
			return err
		}
		return listErr
	}

	opts := storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: lc.pagesInFlight}
	if lc.snapshot != nil {
		// The top level (narinfos, .ls) is listed live: a narinfo
		// uploaded since the snapshot is a root if young, and one deleted
		// since is not walked. Everything below a '/' is the snapshot's.
		opts.SkipPrefixes = nixcache.Subtrees()
	}
	var listErr error
	for batch, err := range storage.ListParallel(ctx, st, "", opts) {
		if err != nil {
			listErr = fmt.Errorf("%w: listing %s: %w", ErrRootsUnavailable, st.URL(), err)
			break
		}
		if ctx.Err() != nil {
			break
		}
		submit(batch, false)
	}
	if lc.snapshot != nil && listErr == nil && ctx.Err() == nil {
		for batch, err := range lc.snapshot.Objects(ctx) {
			if err != nil {
				listErr = fmt.Errorf("%w: reading the inventory: %w", ErrRootsUnavailable, err)
				break
			}
			if ctx.Err() != nil {
				break
			}
			submit(batch, true)
		}
	}
	if err := finish(listErr); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ix.objs.finish(); err != nil {
		return nil, err
	}
	if ix.n >= math.MaxUint32 {
		return nil, fmt.Errorf("gc: %d narinfos: more than this pruner can number", ix.n)
	}
	if err := all.finish(); err != nil {
		return nil, err
	}
	buckets, err := distribute(lc.tmp, all)
	if err != nil {
		return nil, err
	}
	if err := ix.sortNarInfos(lc.tmp, buckets); err != nil {
		return nil, err
	}
	return ix, nil
}

// sortChunk bounds the bytes of narinfo records in one bucket sorted in
// memory, two buckets at a time: the listing's only transient memory that
// grows with the cache. The bucket count stops at 256, so above about
// 5×10⁷ narinfos a bucket holds more. 8 MiB rather than 16 took 10 MiB off
// the peak of a 10⁶-path prune at the same speed (docs/benchmarks.md).
var sortChunk int64 = 8 << 20

// distribute splits the listed narinfo records into buckets by the first
// bits of their hash, each small enough to sort in memory, in hash order.
// A listing that fits is one bucket (no extra pass).
func distribute(tmp *tempFiles, all *spool) ([]*spool, error) {
	if all.size <= sortChunk {
		return []*spool{all}, nil
	}
	bits := 1
	for bits < 8 && all.size>>bits > sortChunk {
		bits++
	}
	buckets, err := newBuckets(tmp, "narinfos", 1<<bits)
	if err != nil {
		return nil, err
	}
	r := all.reader()
	var rec [niRecSize]byte
	for {
		if _, err := io.ReadFull(r, rec[:]); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("gc: reading a temporary file: %w", err)
		}
		if err := buckets[rec[0]>>(8-bits)].write(rec[:]); err != nil {
			return nil, err
		}
	}
	all.f.Close()
	return buckets, nil
}

// sortNarInfos sorts each bucket in memory, writes the narinfo table in
// id order and fills the heap arrays. Two buckets are sorted at once (the
// next one while this one is written): at most two are in memory.
func (ix *index) sortNarInfos(tmp *tempFiles, buckets []*spool) error {
	var err error
	if ix.nis, err = newSpool(tmp, "narinfo-table"); err != nil {
		return err
	}
	ix.pre = make([]uint64, 0, ix.n)
	ix.chk = make([]uint32, 0, ix.n)
	ix.reach = make([]uint64, (ix.n+63)/64)
	for _, b := range buckets {
		if err := b.finish(); err != nil {
			return err
		}
	}
	sorted := make([]chan sortedBucket, len(buckets))
	for i := range sorted {
		sorted[i] = make(chan sortedBucket, 1)
	}
	slots := make(chan struct{}, 2)
	// Each slot's memory is reused by the bucket that takes it next.
	free := make(chan *sortBuf, 2)
	free <- &sortBuf{}
	free <- &sortBuf{}
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for i, b := range buckets {
			select {
			case slots <- struct{}{}:
			case <-quit:
				return
			}
			go func() { sorted[i] <- sortBucket(b, <-free) }()
		}
	}()
	for i := range buckets {
		sb := <-sorted[i]
		if sb.err != nil {
			return sb.err
		}
		err := ix.appendSorted(sb)
		free <- sb.buf
		<-slots
		if err != nil {
			return err
		}
	}
	if err := ix.nis.finish(); err != nil {
		return err
	}
	ix.n = len(ix.pre)
	ix.buildDir()
	return nil
}

// sortedBucket is one bucket's records and their order by hash, in buf.
type sortedBucket struct {
	data  []byte
	order []int32
	buf   *sortBuf
	err   error
}

// sortBuf is the memory one bucket is sorted in.
type sortBuf struct {
	data  []byte
	keys  []sortKey
	order []int32
}

// sortKey orders a record by the first 8 bytes of its hash (i: its index).
type sortKey struct {
	pre uint64
	i   int32
}

func (sb *sortedBucket) hash(i int32) []byte {
	return sb.data[int(i)*niRecSize : int(i)*niRecSize+20]
}

// sortBucket reads a bucket of narinfo records and orders them by hash:
// by the hash's first 8 bytes as one integer (the whole 20 bytes break a
// tie), several times cheaper than comparing byte slices.
func sortBucket(b *spool, buf *sortBuf) sortedBucket {
	defer b.f.Close()
	var err error
	buf.data, err = b.readAll(buf.data)
	if err != nil {
		return sortedBucket{buf: buf, err: err}
	}
	sb := sortedBucket{data: buf.data, buf: buf}
	k := len(sb.data) / niRecSize
	keys := slices.Grow(buf.keys[:0], k)[:k]
	for i := range int32(k) {
		keys[i] = sortKey{binary.BigEndian.Uint64(sb.hash(i)), i}
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if c := cmp.Compare(a.pre, b.pre); c != 0 {
			return c
		}
		return bytes.Compare(sb.hash(a.i), sb.hash(b.i))
	})
	sb.order = slices.Grow(buf.order[:0], k)[:k]
	for j, key := range keys {
		sb.order[j] = key.i
	}
	buf.keys, buf.order = keys, sb.order
	return sb
}

// appendSorted writes a sorted bucket to the narinfo table and the heap
// arrays, dropping a narinfo listed twice.
func (ix *index) appendSorted(sb sortedBucket) error {
	for j, i := range sb.order {
		r := sb.data[int(i)*niRecSize : (int(i)+1)*niRecSize]
		h := nixcache.Hash(r[:20])
		if j > 0 {
			prev := nixcache.Hash(sb.hash(sb.order[j-1]))
			if prev == h {
				continue // listed twice (a listing is not atomic)
			}
			if hashPre(&prev) == hashPre(&h) && hashChk(&prev) == hashChk(&h) {
				return fmt.Errorf("%w: %s and %s share their first 96 bits; this pruner cannot tell them apart", ErrIntegrity, prev, h)
			}
		}
		ix.pre = append(ix.pre, hashPre(&h))
		ix.chk = append(ix.chk, hashChk(&h))
		if err := ix.nis.write(r); err != nil {
			return err
		}
	}
	return nil
}

// buildDir makes the lookup directory: about eight ids per entry.
func (ix *index) buildDir() {
	ix.dirBits = uint(max(1, bits.Len(uint(ix.n))-3))
	ix.dir = make([]uint32, 1<<ix.dirBits+1)
	j := 0
	for i, p := range ix.pre {
		for top := int(p >> (64 - ix.dirBits)); j <= top; j++ {
			ix.dir[j] = uint32(i)
		}
	}
	for ; j < len(ix.dir); j++ {
		ix.dir[j] = uint32(ix.n)
	}
}

// close frees the index's files.
func (ix *index) close() {
	if ix == nil {
		return
	}
	for _, s := range []*spool{ix.nis, ix.objs} {
		if s != nil {
			s.f.Close()
		}
	}
}
