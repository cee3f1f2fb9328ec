package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

const (
	noRef      = ^uint32(0)
	missingBit = uint32(1) << 31
)

// nodeInfo is what the walk keeps per reachable narinfo (32 bytes).
type nodeInfo struct {
	nar      uint64 // keyHash of the NAR key, 0 = no NAR in this cache
	fileSize uint64
	refOff   uint32 // into graph.refs
	refN     uint32
	deriver  uint32 // encoded ref, noRef = none
}

// graph is the reachable part of the cache. A ref is encoded as a listing
// index, or missingBit|i for graph.missing[i] (a path not in the cache).
type graph struct {
	ix      *index
	reach   []uint64 // bitset over ix.narinfos
	info    []nodeInfo
	refs    []uint32
	missing []nixcache.Hash
	missIdx map[nixcache.Hash]uint32

	reachable     int
	reachBytes    uint64
	memoHits      int64
	reads         int64
	readBytes     int64
	danglingRefs  int64
	missingNARs   int64
	missingRoots  int64
	firstProblems []string
}

func newGraph(ix *index) *graph {
	return &graph{
		ix:      ix,
		reach:   make([]uint64, (len(ix.narinfos)+63)/64),
		info:    make([]nodeInfo, len(ix.narinfos)),
		missIdx: map[nixcache.Hash]uint32{},
	}
}

func (g *graph) isReach(i int) bool { return g.reach[i/64]&(1<<(i%64)) != 0 }
func (g *graph) setReach(i int)     { g.reach[i/64] |= 1 << (i % 64) }

func (g *graph) hashOf(ref uint32) nixcache.Hash {
	if ref&missingBit != 0 {
		return g.missing[ref&^missingBit]
	}
	return g.ix.narinfos[ref].h
}

// encMissing must be called with the walk lock held.
func (g *graph) encMissing(h nixcache.Hash) uint32 {
	if i, ok := g.missIdx[h]; ok {
		return missingBit | i
	}
	i := uint32(len(g.missing))
	g.missing = append(g.missing, h)
	g.missIdx[h] = i
	return missingBit | i
}

func (g *graph) problem(format string, args ...any) {
	if len(g.firstProblems) < 20 {
		g.firstProblems = append(g.firstProblems, fmt.Sprintf(format, args...))
	}
}

// visitResult is one narinfo's edges, resolved against the listing outside
// the lock: present refs as listing indices, absent ones as hashes.
type visitResult struct {
	idx        int
	nar        uint64
	fileSize   uint64
	present    []uint32
	absent     []nixcache.Hash
	deriver    int // listing index, -1 none or absent
	derAbsent  *nixcache.Hash
	narMissing bool
	readBytes  int64
	memoHit    bool
}

type walker struct {
	ctx      context.Context
	st       storage.Store
	g        *graph
	memo     *memo
	storeDir string
	prog     Progress
	log      *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []int32
	inflight int
	err      error
}

// walk marks everything reachable from roots (listing indices) through
// References and Deriver, reading each narinfo at most once, or not at all
// when the memo has a valid entry for it.
func (g *graph) walk(ctx context.Context, st storage.Store, roots []int, m *memo, storeDir string, conc int, prog Progress, log *slog.Logger) error {
	prog.Start(PhaseWalk, -1, -1)
	defer prog.Done(PhaseWalk)
	w := &walker{ctx: ctx, st: st, g: g, memo: m, storeDir: storeDir, prog: prog, log: log}
	w.cond = sync.NewCond(&w.mu)
	for _, r := range roots {
		if !g.isReach(r) {
			g.setReach(r)
			w.queue = append(w.queue, int32(r))
		}
	}
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.work()
		}()
	}
	wg.Wait()
	if w.err != nil {
		return w.err
	}
	return ctx.Err()
}

func (w *walker) work() {
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && w.inflight > 0 && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.queue) == 0 {
			w.cond.Broadcast()
			w.mu.Unlock()
			return
		}
		idx := int(w.queue[len(w.queue)-1])
		w.queue = w.queue[:len(w.queue)-1]
		w.inflight++
		w.mu.Unlock()

		res, err := w.visit(idx)

		w.mu.Lock()
		w.inflight--
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			w.cond.Broadcast()
		} else {
			before := len(w.queue)
			w.record(res)
			// Wake one idle worker per new node; wake all at the end.
			for range len(w.queue) - before {
				w.cond.Signal()
			}
			if len(w.queue) == 0 && w.inflight == 0 {
				w.cond.Broadcast()
			}
		}
		w.mu.Unlock()
		w.prog.Advance(PhaseWalk, 1, res.readBytes)
	}
}

// record stores a visit's result and queues new nodes; lock held.
func (w *walker) record(r visitResult) {
	g := w.g
	ni := nodeInfo{nar: r.nar, fileSize: r.fileSize, refOff: uint32(len(g.refs)), deriver: noRef}
	for _, p := range r.present {
		g.refs = append(g.refs, p)
		if !g.isReach(int(p)) {
			g.setReach(int(p))
			w.queue = append(w.queue, int32(p))
		}
	}
	for _, h := range r.absent {
		g.refs = append(g.refs, g.encMissing(h))
		g.danglingRefs++
		g.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[r.idx].h), h)
	}
	ni.refN = uint32(len(g.refs)) - ni.refOff
	switch {
	case r.deriver >= 0:
		ni.deriver = uint32(r.deriver)
		if !g.isReach(r.deriver) {
			g.setReach(r.deriver)
			w.queue = append(w.queue, int32(r.deriver))
		}
	case r.derAbsent != nil:
		ni.deriver = g.encMissing(*r.derAbsent)
	}
	if r.narMissing {
		g.missingNARs++
		g.problem("%s: its NAR is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[r.idx].h))
	}
	g.info[r.idx] = ni
	g.reachable++
	g.reachBytes += r.fileSize
	g.readBytes += r.readBytes
	if r.memoHit {
		g.memoHits++
	} else {
		g.reads++
	}
}

// visit learns one narinfo's edges: from the memo if its entry matches the
// listed version, otherwise by reading and parsing it. No lock held.
func (w *walker) visit(idx int) (visitResult, error) {
	e := w.g.ix.narinfos[idx]
	res := visitResult{idx: idx, deriver: -1}
	if mi := w.memo.lookup(idx, e.fp); mi >= 0 {
		m := w.memo
		res.memoHit = true
		res.nar, res.fileSize = m.nar[mi], m.fileSize[mi]
		for _, r := range m.refs[m.refOff[mi]:m.refOff[mi+1]] {
			w.resolve(m.hashes[r], &res.present, &res.absent)
		}
		if d := m.deriver[mi]; d != 0 {
			w.resolveDeriver(m.hashes[d-1], &res)
		}
	} else {
		key := nixcache.NarInfoKey(e.h)
		data, err := readAll(w.ctx, w.st, key, nixcache.MaxNarInfoSize)
		if err != nil {
			if w.ctx.Err() != nil {
				return res, w.ctx.Err()
			}
			return res, fmt.Errorf("%w: reachable %s cannot be read: %w", ErrIntegrity, key, err)
		}
		res.readBytes = int64(len(data))
		ni, err := nixcache.ParseNarInfo(data, w.storeDir)
		if err != nil {
			return res, fmt.Errorf("%w: reachable %s: %w", ErrIntegrity, key, err)
		}
		if ni.Hash != e.h {
			return res, fmt.Errorf("%w: %s describes %s", ErrIntegrity, key, ni.StorePath)
		}
		if k, ok := ni.NarKey(); ok {
			res.nar = keyHash(k)
		}
		res.fileSize = ni.FileSize
		for _, r := range ni.References {
			w.resolve(r, &res.present, &res.absent)
		}
		if ni.HasDeriver {
			w.resolveDeriver(ni.Deriver, &res)
		}
	}
	if res.nar != 0 && !hasU64(w.g.ix.narKeys, res.nar) {
		res.narMissing = true
	}
	return res, nil
}

func (w *walker) resolve(h nixcache.Hash, present *[]uint32, absent *[]nixcache.Hash) {
	if i := w.g.ix.find(h); i >= 0 {
		*present = append(*present, uint32(i))
	} else {
		*absent = append(*absent, h)
	}
}

func (w *walker) resolveDeriver(h nixcache.Hash, res *visitResult) {
	if i := w.g.ix.find(h); i >= 0 {
		res.deriver = i
	} else {
		hh := h
		res.derAbsent = &hh
	}
}

var errMemoCorrupt = errors.New("closure memo corrupt")
