package gc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"os"
	"slices"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// MemoKey is where the closure memo lives in the cache. The version is in
// the key: a future format gets a new key, and old pruners ignore it (the
// first run of this version is a cold one and writes v2).
const MemoKey = nixcache.KissPrefix + "memo/v2"

var errMemoCorrupt = errors.New("closure memo corrupt")

// memoMaxSize bounds the memo (10⁸ reachable paths make about 6 GiB).
const memoMaxSize = 64 << 30

// memoHeapMax: a memo whose records are at most this large is read into
// memory (every warm lookup is then a slice access); a larger one is read
// record by record with pread(2), so its size does not reach the heap.
const memoHeapMax = 64 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// The memo is the reachable part of the last prune's graph: for every
// reachable store path, the fingerprint (ETag, size) of the narinfo it was
// learnt from, its NAR key hash, FileSize, references and deriver. An entry
// is used only when the current listing shows the same fingerprint, so a
// replaced or deleted narinfo is noticed in the same run with no request.
//
// File format (little endian):
//
//	header  64 bytes: magic "KISSMEM2", u64 entries M, u64 record bytes R,
//	        40 bytes zero
//	hashes  M × 20 bytes, strictly ascending (an entry's index is its rank)
//	records R bytes: one per entry, in the same order, each padded to a
//	        multiple of 4 bytes:
//	          uvarint length of what follows (before padding)
//	          u64 fingerprint, u64 NAR key hash, uvarint FileSize
//	          uvarint n, n references: uvarint v, v even: entry v/2;
//	            v odd: a path not in the cache, its 20-byte hash follows
//	          uvarint deriver: 0 none; 1 not in the cache, hash follows;
//	            2+k entry k
//	crc     u32 CRC-32C of everything before it
//
// Records are found by offset (a warm walk reads one per reachable path),
// hashes only by a sequential merge with the listing. Anything that does
// not decode is corrupt and the memo is ignored (then rewritten).
var memoMagic = [8]byte{'K', 'I', 'S', 'S', 'M', 'E', 'M', '2'}

const memoHeaderSize = 64

// memoFile is a memo to read: one downloaded (or, on a local store, the
// object's own file), or one just built from a walk.
type memoFile struct {
	entries    int64
	hashes     io.ReaderAt // M × 20 bytes at hashOff
	hashOff    int64
	records    io.ReaderAt // recBytes bytes at recOff
	recOff     int64
	recBytes   int64
	recMem     []byte // the records, if small enough to hold
	closeFiles func()
}

func (m *memoFile) close() {
	if m != nil && m.closeFiles != nil {
		m.closeFiles()
		m.closeFiles = nil
	}
}

// memoRef is a reference in a memo record: an entry, or a hash that was not
// in the cache.
type memoRef struct {
	entry int64 // -1: absent, see h
	h     nixcache.Hash
}

// memoEntry is one decoded record.
type memoEntry struct {
	fp, nar, fileSize uint64
	refs              []memoRef
	der               memoRef
	hasDer            bool
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMemoCorrupt}, args...)...)
}

// decodeRecord decodes the record at the start of b (entries M), and
// returns its length with padding.
func decodeRecord(b []byte, m int64, e *memoEntry) (int, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) || l < 16 {
		return 0, corrupt("record length")
	}
	total := (n + int(l) + 3) &^ 3
	if total > len(b) {
		return 0, corrupt("record padding")
	}
	body := b[n : n+int(l)]
	e.fp = binary.LittleEndian.Uint64(body)
	e.nar = binary.LittleEndian.Uint64(body[8:])
	body = body[16:]
	uv := func() (uint64, bool) {
		v, k := binary.Uvarint(body)
		if k <= 0 {
			return 0, false
		}
		body = body[k:]
		return v, true
	}
	ref := func(v uint64, absent bool) (memoRef, bool) {
		if absent {
			if len(body) < 20 {
				return memoRef{}, false
			}
			r := memoRef{entry: -1, h: nixcache.Hash(body[:20])}
			body = body[20:]
			return r, true
		}
		if v >= uint64(m) {
			return memoRef{}, false
		}
		return memoRef{entry: int64(v)}, true
	}
	var ok bool
	if e.fileSize, ok = uv(); !ok {
		return 0, corrupt("FileSize")
	}
	nrefs, ok := uv()
	if !ok || nrefs > uint64(len(body)) {
		return 0, corrupt("reference count")
	}
	e.refs = e.refs[:0]
	for range nrefs {
		v, ok := uv()
		if !ok {
			return 0, corrupt("reference")
		}
		r, ok := ref(v>>1, v&1 == 1)
		if !ok {
			return 0, corrupt("reference out of range")
		}
		e.refs = append(e.refs, r)
	}
	d, ok := uv()
	if !ok {
		return 0, corrupt("deriver")
	}
	e.hasDer = d != 0
	if e.hasDer {
		if e.der, ok = ref(d-2, d == 1); !ok {
			return 0, corrupt("deriver out of range")
		}
	}
	if len(body) != 0 {
		return 0, corrupt("record has %d trailing bytes", len(body))
	}
	return total, nil
}

// recordBuf reads and holds one record for decoding.
type recordBuf struct{ b []byte }

// record returns the bytes of the record at off (its decodable start).
func (m *memoFile) record(off int64, rb *recordBuf) ([]byte, error) {
	if m.recMem != nil {
		if off >= int64(len(m.recMem)) {
			return nil, corrupt("record offset")
		}
		return m.recMem[off:], nil
	}
	if cap(rb.b) < 256 {
		rb.b = make([]byte, 256)
	}
	b := rb.b[:min(int64(cap(rb.b)), m.recBytes-off)]
	if _, err := m.records.ReadAt(b, m.recOff+off); err != nil {
		return nil, fmt.Errorf("gc: reading the memo: %w", err)
	}
	l, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, corrupt("record length")
	}
	if need := int64(n) + int64(l) + 3; need > int64(len(b)) && need <= m.recBytes-off+3 {
		rb.b = make([]byte, need)
		b = rb.b[:min(need, m.recBytes-off)]
		if _, err := m.records.ReadAt(b, m.recOff+off); err != nil {
			return nil, fmt.Errorf("gc: reading the memo: %w", err)
		}
	}
	return b, nil
}

// forEntries calls fn for every entry in order, with its hash and record
// offset (sequential reads).
func (m *memoFile) forEntries(fn func(k int64, h *nixcache.Hash, off int64, e *memoEntry) error) error {
	hr := bufio.NewReaderSize(io.NewSectionReader(m.hashes, m.hashOff, m.entries*20), spoolBuf)
	var rr *bufio.Reader
	if m.recMem == nil {
		rr = bufio.NewReaderSize(io.NewSectionReader(m.records, m.recOff, m.recBytes), spoolBuf)
	}
	var h nixcache.Hash
	var e memoEntry
	var buf []byte
	off := int64(0)
	for k := range m.entries {
		if _, err := io.ReadFull(hr, h[:]); err != nil {
			return corrupt("hashes: %v", err)
		}
		var rec []byte
		if rr == nil {
			rec = m.recMem[off:]
		} else {
			// The length prefix says how much to take.
			head, _ := rr.Peek(binary.MaxVarintLen64)
			l, n := binary.Uvarint(head)
			if n <= 0 || int64(n)+int64(l) > m.recBytes-off {
				return corrupt("record %d length", k)
			}
			total := (n + int(l) + 3) &^ 3
			if cap(buf) < total {
				buf = make([]byte, total)
			}
			buf = buf[:min(int64(total), m.recBytes-off)]
			if _, err := io.ReadFull(rr, buf); err != nil {
				return corrupt("record %d: %v", k, err)
			}
			rec = buf
		}
		n, err := decodeRecord(rec, m.entries, &e)
		if err != nil {
			return fmt.Errorf("entry %d: %w", k, err)
		}
		if err := fn(k, &h, off, &e); err != nil {
			return err
		}
		off += int64(n)
	}
	if off != m.recBytes {
		return corrupt("%d bytes of records, %d decoded", m.recBytes, off)
	}
	return nil
}

// loadMemo opens the memo. A missing memo is (nil, nil); a corrupt one is
// an error the caller only warns about: the walk then reads narinfos. On a
// local store the object's own file is read; otherwise it is copied to a
// temporary file. Either way its checksum is verified first.
func loadMemo(ctx context.Context, st storage.Store, tmp *tempFiles) (*memoFile, error) {
	r, err := st.Get(ctx, MemoKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	size := r.Object().Size
	var f *os.File
	closeFiles := func() { r.Close() }
	if fr, ok := r.(storage.FileReader); ok {
		f = fr.File()
	} else {
		defer r.Close()
		closeFiles = func() {}
		if f, err = tmp.create("memo"); err != nil {
			return nil, err
		}
		if size, err = io.Copy(f, r); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("reading %s: %w", MemoKey, err)
		}
	}
	m, err := openMemo(f, size)
	if err != nil {
		closeFiles()
		return nil, err
	}
	m.closeFiles = closeFiles
	return m, nil
}

// openMemo checks a memo file of size bytes and reads its header.
func openMemo(f *os.File, size int64) (*memoFile, error) {
	if size < memoHeaderSize+4 || size > memoMaxSize {
		return nil, corrupt("%d bytes", size)
	}
	crc := crc32.New(crcTable)
	if _, err := io.Copy(crc, io.NewSectionReader(f, 0, size-4)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", MemoKey, err)
	}
	var tail [4]byte
	if _, err := f.ReadAt(tail[:], size-4); err != nil {
		return nil, fmt.Errorf("reading %s: %w", MemoKey, err)
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(tail[:]) {
		return nil, corrupt("checksum mismatch")
	}
	var head [memoHeaderSize]byte
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("reading %s: %w", MemoKey, err)
	}
	if [8]byte(head[:8]) != memoMagic {
		return nil, corrupt("bad header")
	}
	entries := int64(binary.LittleEndian.Uint64(head[8:]))
	recBytes := int64(binary.LittleEndian.Uint64(head[16:]))
	if entries < 0 || entries >= 1<<32 || recBytes < 0 || recBytes >= 1<<34 ||
		memoHeaderSize+20*entries+recBytes+4 != size {
		return nil, corrupt("sizes do not add up")
	}
	m := &memoFile{
		entries: entries,
		hashes:  f, hashOff: memoHeaderSize,
		records: f, recOff: memoHeaderSize + 20*entries, recBytes: recBytes,
	}
	if recBytes <= memoHeapMax {
		m.recMem = make([]byte, recBytes)
		if _, err := f.ReadAt(m.recMem, m.recOff); err != nil {
			return nil, fmt.Errorf("reading %s: %w", MemoKey, err)
		}
	}
	return m, nil
}

// memoAttach maps the memo onto the listing.
type memoAttach struct {
	// fromListing[id] is 1 + the offset/4 of the memo record for id, if
	// the memo has one learnt from the version listed now; 0 otherwise.
	fromListing []uint32
	// toListing[k] is the id of memo entry k, or -1 if it is not listed.
	toListing []int32
	hits      int64 // entries usable
}

// attach merges the memo (sorted by hash) with the listing (ids are in hash
// order): one sequential pass over each, which also decodes every record
// (a memo that does not decode is corrupt before anything uses it).
func (m *memoFile) attach(ix *index) (*memoAttach, error) {
	if m.recBytes/4 >= 1<<32-1 {
		return nil, corrupt("too large to index")
	}
	a := &memoAttach{fromListing: make([]uint32, ix.n), toListing: make([]int32, m.entries)}
	for k := range a.toListing {
		a.toListing[k] = -1
	}
	type ent struct {
		h   nixcache.Hash
		fp  uint64
		off int64
	}
	ents := make(chan []ent, 4)
	done := make(chan error, 1)
	go func() {
		batch := make([]ent, 0, 4096)
		err := m.forEntries(func(k int64, h *nixcache.Hash, off int64, e *memoEntry) error {
			batch = append(batch, ent{*h, e.fp, off})
			if len(batch) == cap(batch) {
				ents <- batch
				batch = make([]ent, 0, 4096)
			}
			return nil
		})
		if err == nil && len(batch) > 0 {
			ents <- batch
		}
		close(ents)
		done <- err
	}()
	var cur []ent
	var k int64 // memo index of cur[0]
	var prev nixcache.Hash
	next := func() (*ent, bool) {
		for len(cur) == 0 {
			b, ok := <-ents
			if !ok {
				return nil, false
			}
			cur = b
		}
		return &cur[0], true
	}
	match := func(id int, r *niRec) error {
		for {
			e, ok := next()
			if !ok {
				return nil
			}
			c := slices.Compare(e.h[:], r.h[:])
			if c > 0 {
				return nil
			}
			if k > 0 && slices.Compare(e.h[:], prev[:]) <= 0 {
				return corrupt("hashes not ascending")
			}
			prev = e.h
			if c == 0 {
				a.toListing[k] = int32(id)
				if e.fp == r.fp && known(r.mtime) {
					a.fromListing[id] = uint32(e.off/4) + 1
					a.hits++
				}
			}
			cur = cur[1:]
			k++
			if c == 0 {
				return nil
			}
		}
	}
	err := ix.forNarInfos(false, func(start int, recs []niRec) error {
		for j := range recs {
			if err := match(start+j, &recs[j]); err != nil {
				return err
			}
		}
		return nil
	})
	for range ents { // drain after an early stop
	}
	if derr := <-done; derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Building a memo from a walk.

// memoWriter writes a memo's sections while the adjacency is read back.
type memoWriter struct {
	hashes, records *spool
	entries         int64
	buf             []byte
}

// appendRecord appends a record in the memo's format; ref maps an id to an
// entry index.
func appendRecord(b []byte, fp, nar, fileSize uint64, refs []adjRef, der adjRef, hasDer bool, entry func(uint32) uint64) []byte {
	var body []byte
	body = binary.LittleEndian.AppendUint64(body, fp)
	body = binary.LittleEndian.AppendUint64(body, nar)
	body = binary.AppendUvarint(body, fileSize)
	body = binary.AppendUvarint(body, uint64(len(refs)))
	for _, r := range refs {
		if r.absent {
			body = binary.AppendUvarint(body, 1)
			body = append(body, r.h[:]...)
		} else {
			body = binary.AppendUvarint(body, entry(r.id)<<1)
		}
	}
	switch {
	case !hasDer:
		body = binary.AppendUvarint(body, 0)
	case der.absent:
		body = binary.AppendUvarint(body, 1)
		body = append(body, der.h[:]...)
	default:
		body = binary.AppendUvarint(body, 2+entry(der.id))
	}
	start := len(b)
	b = binary.AppendUvarint(b, uint64(len(body)))
	b = append(b, body...)
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rankDir counts the reached ids before each word of the reach bitset, so
// an id's memo entry index (its rank among reached ids) is O(1).
type rankDir []uint32

func newRankDir(reach []uint64) rankDir {
	d := make(rankDir, len(reach)+1)
	for w, v := range reach {
		d[w+1] = d[w] + uint32(bits.OnesCount64(v))
	}
	return d
}

func (d rankDir) rank(reach []uint64, id uint32) uint64 {
	w := id / 64
	return uint64(d[w]) + uint64(bits.OnesCount64(reach[w]&(1<<(id%64)-1)))
}

// buildMemo writes the walk's adjacency (bucketed by id) as a memo: entries
// are the reached ids in order.
func buildMemo(ix *index, adj *adjWriter, tmp *tempFiles) (*memoFile, error) {
	if err := adj.finish(); err != nil {
		return nil, err
	}
	hs, err := newSpool(tmp, "memo-hashes")
	if err != nil {
		return nil, err
	}
	rs, err := newSpool(tmp, "memo-records")
	if err != nil {
		return nil, err
	}
	ranks := newRankDir(ix.reach)
	entry := func(id uint32) uint64 { return ranks.rank(ix.reach, id) }
	var entries int64
	var data, out []byte
	type item struct {
		id  uint32
		off int
	}
	var items []item
	var refs []adjRef
	// The hashes come from the narinfo table, read forward in chunks as
	// the ids ascend.
	table := make([]byte, narInfoChunk*niRecSize)
	tableStart, tableEnd := 0, 0
	hashOf := func(id int) ([]byte, error) {
		if id < tableStart || id >= tableEnd {
			tableStart, tableEnd = id, min(id+narInfoChunk, ix.n)
			b := table[:(tableEnd-tableStart)*niRecSize]
			if _, err := ix.nis.f.ReadAt(b, int64(tableStart)*niRecSize); err != nil {
				return nil, fmt.Errorf("gc: reading the narinfo table: %w", err)
			}
		}
		t := id - tableStart
		return table[t*niRecSize : t*niRecSize+20], nil
	}
	for b, sp := range adj.buckets {
		lo, hi := adj.idRange(b, ix.n)
		if sp == nil || sp.size == 0 {
			continue
		}
		if data, err = sp.readAll(data); err != nil {
			return nil, err
		}
		sp.f.Close()
		items = items[:0]
		for off := 0; off < len(data); {
			l := int(binary.LittleEndian.Uint32(data[off:]))
			items = append(items, item{binary.LittleEndian.Uint32(data[off+4:]), off})
			off += 4 + l
		}
		slices.SortFunc(items, func(a, b item) int { return int(a.id) - int(b.id) })
		for _, it := range items {
			var a adjRecord
			a.refs = refs[:0]
			if err := a.decode(data[it.off:]); err != nil {
				return nil, err
			}
			refs = a.refs
			if !ix.isReach(int(a.id)) || int(a.id) < lo || int(a.id) >= hi {
				return nil, fmt.Errorf("gc: walk record for id %d out of place", a.id)
			}
			h, err := hashOf(int(a.id))
			if err != nil {
				return nil, err
			}
			if err := hs.write(h); err != nil {
				return nil, err
			}
			out = appendRecord(out[:0], a.fp, a.nar, a.fileSize, a.refs, a.der, a.hasDer, entry)
			if err := rs.write(out); err != nil {
				return nil, err
			}
			entries++
		}
	}
	if want := int64(ranks[len(ranks)-1]); entries != want {
		return nil, fmt.Errorf("gc: %d walk records for %d reached narinfos", entries, want)
	}
	if err := hs.finish(); err != nil {
		return nil, err
	}
	if err := rs.finish(); err != nil {
		return nil, err
	}
	return &memoFile{
		entries: entries,
		hashes:  hs.f, records: rs.f, recBytes: rs.size,
		closeFiles: func() { hs.f.Close(); rs.f.Close() },
	}, nil
}

// reader streams the memo in its stored form: header, hashes, records,
// checksum.
func (m *memoFile) reader() io.Reader {
	var head [memoHeaderSize]byte
	copy(head[:], memoMagic[:])
	binary.LittleEndian.PutUint64(head[8:], uint64(m.entries))
	binary.LittleEndian.PutUint64(head[16:], uint64(m.recBytes))
	crc := crc32.New(crcTable)
	body := io.TeeReader(io.MultiReader(
		bytes.NewReader(head[:]),
		io.NewSectionReader(m.hashes, m.hashOff, 20*m.entries),
		io.NewSectionReader(m.records, m.recOff, m.recBytes),
	), crc)
	return io.MultiReader(body, &lazyReader{f: func() io.Reader {
		var tail [4]byte
		binary.LittleEndian.PutUint32(tail[:], crc.Sum32())
		return bytes.NewReader(tail[:])
	}})
}

// size is the stored memo's size.
func (m *memoFile) size() int64 { return memoHeaderSize + 20*m.entries + m.recBytes + 4 }

// saveMemo writes the memo with one unconditional Put (atomic; the last
// writer wins: it is only a cache, and every entry is validated on use).
func saveMemo(ctx context.Context, st storage.Store, m *memoFile) (int64, error) {
	o, err := st.Put(ctx, MemoKey, m.reader(), storage.PutOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return 0, err
	}
	return o.Size, nil
}

// lazyReader makes its reader when first read (after what comes before it
// in a MultiReader is consumed).
type lazyReader struct {
	f func() io.Reader
	r io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		l.r = l.f()
	}
	return l.r.Read(p)
}
