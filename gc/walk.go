package gc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// walkConfig is everything the closure walk works with.
type walkConfig struct {
	store    storage.Store
	storeDir string
	// conc is the number of workers (narinfo reads in flight).
	conc int
	ix   *index
	// memo and attach, if set, give the edges of the narinfos whose
	// listed version the memo has: no request for those.
	memo   *memoFile
	attach *memoAttach
	prog   Progress
	// adj, if set, receives one record per reached narinfo (the next
	// memo); a dry run needs none.
	adj *adjWriter
	// haveLogs: the cache has build logs, so the derivers of reachable
	// paths that are not in it are collected (their logs are kept).
	haveLogs bool
	// keepNAR and keepDrv receive what keeps other objects (narRefSize
	// and 8-byte records): decide reads them back into arrays of exactly
	// their length. Grown in the heap by append, their copies were the
	// peak of a prune (docs/benchmarks.md). Nil: not collected (a View).
	keepNAR, keepDrv *spool
}

// narRef is a reachable narinfo's NAR key hash (split so the pair takes 12
// bytes) and the narinfo's id.
type narRef struct{ khLo, khHi, id uint32 }

func (n narRef) kh() uint64 { return uint64(n.khHi)<<32 | uint64(n.khLo) }

const narRefSize = 12

func putNarRef(b []byte, kh uint64, id uint32) {
	binary.LittleEndian.PutUint64(b, kh)
	binary.LittleEndian.PutUint32(b[8:], id)
}

func getNarRef(b []byte) narRef {
	return narRef{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])}
}

// walker is the closure walk, the one walk of every run: over a complete
// listing, by narinfo id. A narinfo the memo knows is decoded from its
// record; any other is read and parsed. Workers take the ids to visit from
// a shared stack in small batches (memo hits are cheap, and handing the lock
// over after each costs more than they do; a batch holds at most one read,
// so reads keep conc workers busy), visit them without the lock, and record
// the results under it.
type walker struct {
	walkConfig
	ctx context.Context

	mu       sync.Mutex
	cond     *sync.Cond
	stack    []wentry
	inflight int
	err      error

	reads, readBytes, memoHits, danglingRefs int64
	firstProblems                            []string

	reachBytes uint64
	// rec is a record for keepNAR (the NAR of every reachable narinfo),
	// written as the walk goes, as keepDrv gets the first 8 bytes of every
	// deriver of a reachable path that is not in the cache (haveLogs).
	rec [narRefSize]byte
}

// wentry is an id to visit, with its hash when the walk learnt it from a
// reference (a read needs it; otherwise it is read from the index).
type wentry struct {
	id      uint32
	hasHash bool
	h       nixcache.Hash
}

func newWalker(ctx context.Context, c walkConfig) *walker {
	w := &walker{walkConfig: c, ctx: ctx}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// run walks the closures of roots. It may be called again with more roots:
// what is reached already is not walked twice.
func (w *walker) run(roots []wentry) error {
	w.mu.Lock()
	for _, r := range roots {
		w.push(r)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for range max(1, w.conc) {
		wg.Go(w.work)
	}
	wg.Wait()
	if w.err != nil {
		return w.err
	}
	return w.ctx.Err()
}

// push marks e reached and queues it (lock held).
func (w *walker) push(e wentry) {
	if !w.ix.isReach(int(e.id)) {
		w.ix.setReach(int(e.id))
		w.stack = append(w.stack, e)
	}
}

func (w *walker) hit(id uint32) bool {
	return w.attach != nil && w.attach.fromListing[id] != 0
}

const walkBatch = 32

// visitScratch is one worker's reused memory: a walk of millions of
// narinfos then allocates little beyond what it keeps.
type visitScratch struct {
	batch   []wentry
	results []visitResult
	ni      nixcache.NarInfo
	me      memoEntry
	rb      recordBuf
	enc     []byte
}

// visitResult is what a visit learnt: the record for the next memo
// (adjRecord, encoded in enc), and the references to walk on.
type visitResult struct {
	rec       adjRecord
	encStart  int
	encEnd    int
	read      bool
	readBytes int64
}

func (w *walker) work() {
	sc := &visitScratch{}
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.stack) == 0 && w.inflight > 0 && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.stack) == 0 {
			w.cond.Broadcast()
			return
		}
		sc.batch = sc.batch[:0]
		for len(w.stack) > 0 && len(sc.batch) < walkBatch {
			e := w.stack[len(w.stack)-1]
			w.stack = w.stack[:len(w.stack)-1]
			sc.batch = append(sc.batch, e)
			if !w.hit(e.id) {
				break
			}
		}
		if len(w.stack) > 0 {
			w.cond.Signal()
		}
		w.inflight++
		w.mu.Unlock()
		err := w.visitBatch(sc)
		if err == nil {
			err = w.ctx.Err()
		}
		w.mu.Lock()
		w.inflight--
		if err == nil {
			err = w.record(sc)
		}
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			w.cond.Broadcast()
			continue
		}
		if len(w.stack) == 0 && w.inflight == 0 {
			w.cond.Broadcast()
		}
	}
}

// visitBatch visits the batch without the lock.
func (w *walker) visitBatch(sc *visitScratch) error {
	sc.results = sc.results[:0]
	sc.enc = sc.enc[:0]
	for _, e := range sc.batch {
		i := len(sc.results)
		if i < cap(sc.results) {
			sc.results = sc.results[:i+1]
		} else {
			sc.results = append(sc.results, visitResult{})
		}
		res := &sc.results[i]
		refs := res.rec.refs[:0]
		*res = visitResult{}
		res.rec.refs = refs
		var err error
		known := w.hit(e.id)
		if known {
			known, err = w.fromMemo(e.id, res, sc)
		}
		if !known && err == nil {
			err = w.read(e, res, sc)
		}
		if err != nil {
			return err
		}
		if w.adj != nil {
			res.encStart = len(sc.enc)
			sc.enc = res.rec.appendTo(sc.enc)
			res.encEnd = len(sc.enc)
		}
	}
	return nil
}

// fromMemo learns id's edges from its memo record. A record whose narinfo
// named no NAR in this cache (NAR key hash 0: an absolute URL) is not used
// (known == false): the narinfo is read again, so a memo written when fewer
// URL forms counted as this cache's (nixcache.NarKeyFromURL: "/nar/x",
// "../nar/x") cannot keep such a NAR from being kept.
func (w *walker) fromMemo(id uint32, res *visitResult, sc *visitScratch) (known bool, err error) {
	off := int64(w.attach.fromListing[id]-1) * 4
	b, err := w.memo.record(off, &sc.rb)
	if err != nil {
		return false, err
	}
	me := &sc.me
	if _, err := decodeRecord(b, w.memo.entries, me); err != nil {
		return false, err
	}
	if me.nar == 0 {
		return false, nil
	}
	r := &res.rec
	*r = adjRecord{id: id, fp: me.fp, nar: me.nar, fileSize: me.fileSize, refs: r.refs[:0], hasDer: me.hasDer}
	for _, m := range me.refs {
		ref, err := w.resolveMemo(m)
		if err != nil {
			return false, err
		}
		r.refs = append(r.refs, ref)
	}
	if me.hasDer {
		if r.der, err = w.resolveMemo(me.der); err != nil {
			return false, err
		}
	}
	return true, nil
}

// resolveMemo maps a memo reference to the listing: an entry listed now, or
// a hash that is (or is no longer) in the cache.
func (w *walker) resolveMemo(m memoRef) (adjRef, error) {
	if m.entry >= 0 {
		if id := w.attach.toListing[m.entry]; id >= 0 {
			return adjRef{id: uint32(id)}, nil
		}
		// Gone since the memo was written: read its hash for the record.
		var h [20]byte
		if _, err := w.memo.hashes.ReadAt(h[:], w.memo.hashOff+20*m.entry); err != nil {
			return adjRef{}, fmt.Errorf("gc: reading the memo: %w", err)
		}
		return adjRef{absent: true, h: h}, nil
	}
	// Absent then: it may have been uploaded since.
	if id := w.ix.lookup(&m.h); id >= 0 {
		return adjRef{id: uint32(id)}, nil
	}
	return adjRef{absent: true, h: m.h}, nil
}

// read reads and parses a narinfo the memo does not know.
func (w *walker) read(e wentry, res *visitResult, sc *visitScratch) error {
	h := e.h
	if !e.hasHash {
		var err error
		if h, err = w.ix.hashOf(int(e.id)); err != nil {
			return err
		}
	}
	ni := &sc.ni
	ok, obj, err := readReachableInto(w.ctx, w.store, w.storeDir, h, ni)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: reachable %s vanished after the listing", ErrIntegrity, nixcache.NarInfoKey(h))
	}
	r := &res.rec
	*r = adjRecord{id: e.id, fp: fingerprint(obj), fileSize: ni.FileSize, refs: r.refs[:0], hasDer: ni.HasDeriver}
	if k, ok := ni.NarKey(); ok {
		r.nar = keyHash(k)
	}
	for i := range ni.References {
		r.refs = append(r.refs, w.resolve(&ni.References[i]))
	}
	if ni.HasDeriver {
		r.der = w.resolve(&ni.Deriver)
	}
	res.read, res.readBytes = true, obj.Size
	return nil
}

func (w *walker) resolve(h *nixcache.Hash) adjRef {
	if id := w.ix.lookup(h); id >= 0 {
		return adjRef{id: uint32(id), h: *h, hashKnown: true}
	}
	return adjRef{absent: true, h: *h}
}

// record stores a visited batch (lock held): queue the references, write
// the records, count.
func (w *walker) record(sc *visitScratch) error {
	for i := range sc.results {
		res := &sc.results[i]
		r := &res.rec
		for _, ref := range r.refs {
			if ref.absent {
				w.danglingRefs++
				if len(w.firstProblems) < 20 {
					h, err := w.ix.hashOf(int(r.id))
					if err != nil {
						return err
					}
					w.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(h), ref.h)
				}
				continue
			}
			w.push(wentry{id: ref.id, hasHash: ref.hashKnown, h: ref.h})
		}
		if r.hasDer && !r.der.absent {
			w.push(wentry{id: r.der.id, hasHash: r.der.hashKnown, h: r.der.h})
		}
		if r.nar != 0 && w.keepNAR != nil {
			putNarRef(w.rec[:], r.nar, r.id)
			if err := w.keepNAR.write(w.rec[:]); err != nil {
				return err
			}
		}
		if w.haveLogs && r.hasDer && r.der.absent && w.keepDrv != nil {
			// The hash's first 8 bytes: read back big endian, hashPre.
			if err := w.keepDrv.write(r.der.h[:8]); err != nil {
				return err
			}
		}
		w.reachBytes += r.fileSize
		if w.adj != nil {
			if err := w.adj.write(r.id, sc.enc[res.encStart:res.encEnd]); err != nil {
				return err
			}
		}
		if res.read {
			w.reads++
			w.readBytes += res.readBytes
		} else {
			w.memoHits++
		}
		w.prog.Advance(PhaseWalk, 1, res.readBytes)
	}
	if len(w.stack) > 0 {
		w.cond.Signal()
	}
	return nil
}

func (w *walker) problem(format string, args ...any) {
	if len(w.firstProblems) < 20 {
		w.firstProblems = append(w.firstProblems, fmt.Sprintf(format, args...))
	}
}

// adjRef is a reference in a walk record: a listed narinfo (its id; its
// hash too if the walk read it from a narinfo), or a hash not in the cache.
type adjRef struct {
	id        uint32
	absent    bool
	hashKnown bool
	h         nixcache.Hash
}

// adjRecord is what the walk learnt about one reached narinfo, kept in a
// temporary file until the next memo is written from it.
//
// Encoding: u32 length of what follows, u32 id, u64 fingerprint, u64 NAR
// key hash, uvarint FileSize, uvarint n, n × reference (uvarint v: v even,
// id v/2; v odd, not listed, its 20-byte hash follows), uvarint deriver (0
// none; 1 not listed, hash follows; 2+id).
type adjRecord struct {
	id                uint32
	fp, nar, fileSize uint64
	refs              []adjRef
	der               adjRef
	hasDer            bool
}

func (a *adjRecord) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, a.id)
	b = binary.LittleEndian.AppendUint64(b, a.fp)
	b = binary.LittleEndian.AppendUint64(b, a.nar)
	b = binary.AppendUvarint(b, a.fileSize)
	b = binary.AppendUvarint(b, uint64(len(a.refs)))
	for _, r := range a.refs {
		if r.absent {
			b = binary.AppendUvarint(b, 1)
			b = append(b, r.h[:]...)
		} else {
			b = binary.AppendUvarint(b, uint64(r.id)<<1)
		}
	}
	switch {
	case !a.hasDer:
		b = binary.AppendUvarint(b, 0)
	case a.der.absent:
		b = binary.AppendUvarint(b, 1)
		b = append(b, a.der.h[:]...)
	default:
		b = binary.AppendUvarint(b, 2+uint64(a.der.id))
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

var errAdjCorrupt = errors.New("gc: walk record corrupt")

func (a *adjRecord) decode(b []byte) error {
	if len(b) < 4 {
		return errAdjCorrupt
	}
	l := int(binary.LittleEndian.Uint32(b))
	if l > len(b)-4 || l < 20 {
		return errAdjCorrupt
	}
	b = b[4 : 4+l]
	a.id = binary.LittleEndian.Uint32(b)
	a.fp = binary.LittleEndian.Uint64(b[4:])
	a.nar = binary.LittleEndian.Uint64(b[12:])
	b = b[20:]
	uv := func() uint64 {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			b = nil
			return 0
		}
		b = b[k:]
		return v
	}
	ref := func(v uint64, absent bool) adjRef {
		if absent {
			if len(b) < 20 {
				b = nil
				return adjRef{}
			}
			r := adjRef{absent: true, h: nixcache.Hash(b[:20])}
			b = b[20:]
			return r
		}
		return adjRef{id: uint32(v)}
	}
	a.fileSize = uv()
	n := uv()
	a.refs = a.refs[:0]
	for range n {
		if b == nil {
			return errAdjCorrupt
		}
		v := uv()
		a.refs = append(a.refs, ref(v>>1, v&1 == 1))
	}
	d := uv()
	if b == nil {
		return errAdjCorrupt
	}
	a.hasDer = d != 0
	if a.hasDer {
		a.der = ref(d-2, d == 1)
	}
	if b == nil || len(b) != 0 {
		return errAdjCorrupt
	}
	return nil
}

// adjWriter distributes walk records over files by id range, so the memo
// can be written in id order one range at a time.
type adjWriter struct {
	tmp     *tempFiles
	shift   uint
	buckets []*spool
}

// adjShift: ids per adjacency file (2^16: about 3 MiB of records, held
// at once when the memo is written).
const adjShift = 16

func newAdjWriter(tmp *tempFiles, n int) *adjWriter {
	return &adjWriter{tmp: tmp, shift: adjShift, buckets: make([]*spool, (n>>adjShift)+1)}
}

func (a *adjWriter) idRange(b, n int) (lo, hi int) {
	return b << a.shift, min((b+1)<<a.shift, n)
}

func (a *adjWriter) write(id uint32, rec []byte) error {
	b := int(id >> a.shift)
	sp := a.buckets[b]
	if sp == nil {
		var err error
		if sp, err = newSpool(a.tmp, "walk"); err != nil {
			return err
		}
		sp.bufSize = 16 << 10
		a.buckets[b] = sp
	}
	return sp.write(rec)
}

func (a *adjWriter) finish() error {
	for _, sp := range a.buckets {
		if sp != nil {
			if err := sp.finish(); err != nil {
				return err
			}
		}
	}
	return nil
}

var narinfoBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// readReachableInto reads and checks the narinfo of h, a path something
// reaches, parsing into *ni (reused by a walk worker), and returns the
// attributes of the version read. ok is false if it is absent (or on
// error). Anything unreadable, unparseable or describing another path is
// ErrIntegrity: the pruner never guesses a reachable path's edges.
func readReachableInto(ctx context.Context, st storage.Store, storeDir string, h nixcache.Hash, ni *nixcache.NarInfo) (bool, storage.Object, error) {
	key := nixcache.NarInfoKey(h)
	// The parsed NarInfo copies what it keeps, so the bytes go back to a
	// pool: half a million narinfo reads allocate no read buffers.
	bp := narinfoBufs.Get().(*[]byte)
	defer narinfoBufs.Put(bp)
	data, obj, err := readObject(ctx, st, key, nixcache.MaxNarInfoSize, *bp)
	if cap(data) > cap(*bp) && cap(data) <= 64<<10 {
		*bp = data[:0]
	}
	if errors.Is(err, storage.ErrNotFound) {
		return false, obj, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, obj, ctx.Err()
		}
		return false, obj, fmt.Errorf("%w: reachable %s cannot be read: %w", ErrIntegrity, key, err)
	}
	if err := nixcache.ParseNarInfoInto(ni, data, storeDir); err != nil {
		return false, obj, fmt.Errorf("%w: reachable %s: %w", ErrIntegrity, key, err)
	}
	if ni.Hash != h {
		return false, obj, fmt.Errorf("%w: %s describes %s", ErrIntegrity, key, ni.StorePath)
	}
	return true, obj, nil
}
