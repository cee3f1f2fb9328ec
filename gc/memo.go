package gc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// MemoKey is where the closure memo lives in the cache. The version is in
// the key: a future format gets a new key, and old pruners ignore it.
const MemoKey = nixcache.KissPrefix + "memo/v1"

var memoMagic = []byte("KISSMEMO\x01")

var errMemoCorrupt = errors.New("closure memo corrupt")

// memoMaxSize bounds the memo read (1M paths make about 60 MiB).
const memoMaxSize = 4 << 30

// memo is the persistent closure memo: for each store path hash it knew, the
// fingerprint (ETag, size) of the narinfo it was learnt from, its NAR key
// hash, FileSize, references and deriver. An entry is used only when the
// current listing shows the same fingerprint, so a replaced or deleted
// narinfo is noticed in the same run with no per-narinfo request.
//
// File format (little endian): magic "KISSMEMO\x01", uvarint N, N sorted
// 20-byte hashes, then per hash a flag byte (1 = has info) and, with info,
// fp u64, nar u64, uvarint fileSize, uvarint deriver (memo index+1, 0 none),
// uvarint nrefs, nrefs × uvarint memo index; then a CRC-32 (IEEE) of all of
// it. Anything else is corrupt and the memo is ignored (then rewritten).
type memo struct {
	hashes   []nixcache.Hash
	hasInfo  []bool
	fp       []uint64
	nar      []uint64
	fileSize []uint64
	deriver  []uint32
	refOff   []uint32 // into refs (blocks offsets)
	refN     []uint32
	refs     blocks[uint32]

	fromListing []int32 // listing index → memo index, -1 none
	toListing   []int32 // memo index → listing index, -1 not listed
}

// refsOf returns the references of memo entry mi (memo indices).
func (m *memo) refsOf(mi int) []uint32 { return m.refs.list(m.refOff[mi], m.refN[mi]) }

// has reports whether the memo has an entry for listing index idx (valid or
// not).
func (m *memo) has(idx int) bool {
	return m != nil && m.fromListing[idx] >= 0 && m.hasInfo[m.fromListing[idx]]
}

// lookup returns the memo index for listing index idx if the memo's entry
// was learnt from the same narinfo version (fingerprint), else -1.
func (m *memo) lookup(idx int, fp uint64) int {
	if m == nil {
		return -1
	}
	mi := m.fromListing[idx]
	if mi < 0 || !m.hasInfo[mi] || m.fp[mi] != fp {
		return -1
	}
	return int(mi)
}

// attach maps the listing onto the memo (a merge of two sorted lists).
func (m *memo) attach(ix *index) {
	m.fromListing = make([]int32, len(ix.narinfos))
	m.toListing = make([]int32, len(m.hashes))
	for j := range m.toListing {
		m.toListing[j] = -1
	}
	j := 0
	for i := range ix.narinfos {
		h := ix.narinfos[i].h
		for j < len(m.hashes) && bytes.Compare(m.hashes[j][:], h[:]) < 0 {
			j++
		}
		if j < len(m.hashes) && m.hashes[j] == h {
			m.fromListing[i] = int32(j)
			m.toListing[j] = int32(i)
		} else {
			m.fromListing[i] = -1
		}
	}
}

func decodeMemo(data []byte) (*memo, error) {
	return readMemo(bytes.NewReader(data), int64(len(data)))
}

// memoReader reads the memo's body through a buffer, summing what it
// consumes, so a memo of tens of MiB is decoded without being held whole.
type memoReader struct {
	br   *bufio.Reader
	crc  hash.Hash32
	one  [1]byte
	read int64 // bytes consumed
}

func (m *memoReader) ReadByte() (byte, error) {
	c, err := m.br.ReadByte()
	if err == nil {
		m.one[0] = c
		m.crc.Write(m.one[:])
		m.read++
	}
	return c, err
}

func (m *memoReader) Read(p []byte) (int, error) {
	n, err := m.br.Read(p)
	m.crc.Write(p[:n])
	m.read += int64(n)
	return n, err
}

// readMemo decodes a memo of size bytes from r.
func readMemo(r io.Reader, size int64) (*memo, error) {
	mr := &memoReader{br: bufio.NewReaderSize(r, 1<<16), crc: crc32.NewIEEE()}
	fail := func(format string, args ...any) (*memo, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{errMemoCorrupt}, args...)...)
	}
	magic := make([]byte, len(memoMagic))
	if size < int64(len(memoMagic))+4 {
		return fail("bad header")
	}
	if _, err := io.ReadFull(mr, magic); err != nil || !bytes.Equal(magic, memoMagic) {
		return fail("bad header")
	}
	n, err := binary.ReadUvarint(mr)
	if err != nil || n > uint64(size)/20 || n >= uint64(missingBit) {
		return fail("bad count")
	}
	m := &memo{
		hashes: make([]nixcache.Hash, n), hasInfo: make([]bool, n), fp: make([]uint64, n),
		nar: make([]uint64, n), fileSize: make([]uint64, n), deriver: make([]uint32, n), refOff: make([]uint32, n), refN: make([]uint32, n),
	}
	for i := range m.hashes {
		if _, err := io.ReadFull(mr, m.hashes[i][:]); err != nil {
			return fail("%v", err)
		}
		if i > 0 && bytes.Compare(m.hashes[i-1][:], m.hashes[i][:]) >= 0 {
			return fail("hashes not sorted")
		}
	}
	var u8 [8]byte
	for i := range m.hashes {
		flag, err := mr.ReadByte()
		if err != nil || flag > 1 {
			return fail("bad entry %d", i)
		}
		if flag == 0 {
			continue
		}
		m.hasInfo[i] = true
		if _, err := io.ReadFull(mr, u8[:]); err != nil {
			return fail("%v", err)
		}
		m.fp[i] = binary.LittleEndian.Uint64(u8[:])
		if _, err := io.ReadFull(mr, u8[:]); err != nil {
			return fail("%v", err)
		}
		m.nar[i] = binary.LittleEndian.Uint64(u8[:])
		var vals [3]uint64
		for k := range vals {
			if vals[k], err = binary.ReadUvarint(mr); err != nil {
				return fail("entry %d: %v", i, err)
			}
		}
		m.fileSize[i] = vals[0]
		// Each reference takes at least a byte of what is left: a corrupt
		// count cannot make the decoder allocate more than the file.
		if vals[1] > n || vals[2] > uint64(size-mr.read) {
			return fail("entry %d out of range", i)
		}
		m.deriver[i] = uint32(vals[1])
		m.refOff[i], m.refN[i] = m.refs.reserve(int(vals[2])), uint32(vals[2])
		for range vals[2] {
			ref, err := binary.ReadUvarint(mr)
			if err != nil || ref >= n {
				return fail("entry %d: bad reference", i)
			}
			m.refs.push(uint32(ref))
		}
	}
	var sum [4]byte
	if _, err := io.ReadFull(mr.br, sum[:]); err != nil {
		return fail("no checksum")
	}
	if mr.crc.Sum32() != binary.LittleEndian.Uint32(sum[:]) {
		return fail("checksum mismatch")
	}
	if _, err := mr.br.ReadByte(); err != io.EOF {
		return fail("trailing bytes")
	}
	return m, nil
}

// loadMemo reads the memo. A missing memo is (nil, nil); a corrupt one is
// an error the caller only warns about: the walk then reads narinfos.
func loadMemo(ctx context.Context, st storage.Store) (*memo, error) {
	r, err := st.Get(ctx, MemoKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	size := r.Object().Size
	if size > memoMaxSize {
		return nil, fmt.Errorf("%w: %d bytes", errMemoCorrupt, size)
	}
	m, err := readMemo(r, size)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return m, err
}

// encodeMemo writes the reachable part of g (with the hashes it references
// that are absent) in the memo format.
func encodeMemo(g *graph, w io.Writer) error {
	type ent struct {
		h   nixcache.Hash
		ref uint32 // encoded graph ref
	}
	ents := make([]ent, 0, g.reachable+len(g.missing))
	for i := range g.ix.narinfos {
		if g.isReach(i) {
			ents = append(ents, ent{g.ix.narinfos[i].h, uint32(i)})
		}
	}
	for i, h := range g.missing {
		ents = append(ents, ent{h, missingBit | uint32(i)})
	}
	slices.SortFunc(ents, func(a, b ent) int { return bytes.Compare(a.h[:], b.h[:]) })
	// g.missing may name a hash more than once (it is not deduplicated
	// while walking): one memo entry per hash.
	toMemo := make([]uint32, len(g.ix.narinfos))
	missToMemo := make([]uint32, len(g.missing))
	uniq := ents[:0]
	for _, e := range ents {
		if len(uniq) == 0 || uniq[len(uniq)-1].h != e.h {
			uniq = append(uniq, e)
		}
		mi := uint32(len(uniq) - 1)
		if e.ref&missingBit != 0 {
			missToMemo[e.ref&^missingBit] = mi
		} else {
			toMemo[e.ref] = mi
		}
	}
	ents = uniq
	enc := func(ref uint32) uint32 {
		if ref&missingBit != 0 {
			return missToMemo[ref&^missingBit]
		}
		return toMemo[ref]
	}
	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<16)
	var buf [binary.MaxVarintLen64]byte
	uv := func(v uint64) { bw.Write(buf[:binary.PutUvarint(buf[:], v)]) }
	bw.Write(memoMagic)
	uv(uint64(len(ents)))
	for _, e := range ents {
		bw.Write(e.h[:])
	}
	for _, e := range ents {
		if e.ref&missingBit != 0 {
			bw.WriteByte(0)
			continue
		}
		ni := g.info[e.ref]
		bw.WriteByte(1)
		binary.LittleEndian.PutUint64(buf[:8], g.ix.narinfos[e.ref].fp)
		bw.Write(buf[:8])
		binary.LittleEndian.PutUint64(buf[:8], ni.nar)
		bw.Write(buf[:8])
		uv(ni.fileSize)
		if ni.deriver == noRef {
			uv(0)
		} else {
			uv(uint64(enc(ni.deriver)) + 1)
		}
		uv(uint64(ni.refN))
		for _, r := range g.refs.list(ni.refOff, ni.refN) {
			uv(uint64(enc(r)))
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(buf[:4], crc.Sum32())
	_, err := w.Write(buf[:4])
	return err
}

// saveMemo writes the memo with one unconditional Put (atomic; the last
// writer wins: it is only a cache, and every entry is validated on use).
func saveMemo(ctx context.Context, st storage.Store, g *graph) (int64, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(encodeMemo(g, pw)) }()
	o, err := st.Put(ctx, MemoKey, pr, storage.PutOptions{ContentType: "application/octet-stream"})
	pr.CloseWithError(err)
	if err != nil {
		return 0, err
	}
	return o.Size, nil
}
