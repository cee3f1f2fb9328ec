package gc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// indexWalk is the walk over a complete listing: every walk with a memo,
// and the cold walk on a local store, whose listing is cheap enough not to
// be worth overlapping with the reads (walk.go's walker does that for
// remote stores). It works on listing indices: a memo hit is resolved with
// array lookups (memo index → listing index) under the lock, with no
// request and no hashing; only memo misses are read, in parallel, outside
// the lock. When the listing had no attributes (storage.KeyLister), a memo
// entry is checked against a Stat of the narinfo first: one stat instead of
// a read.
type indexWalk struct {
	ctx      context.Context
	st       storage.Store
	g        *graph
	m        *memo
	storeDir string
	prog     Progress

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []int32
	inflight int
	err      error
}

// missResult is one narinfo read because the memo had no valid entry.
type missResult struct {
	idx       int
	nar       uint64
	fileSize  uint64
	present   []uint32
	absent    []nixcache.Hash
	deriver   int // listing index, -1 none or absent
	derAbsent *nixcache.Hash
	readBytes int64
}

func newIndexWalk(ctx context.Context, st storage.Store, ix *index, m *memo, storeDir string, prog Progress) *indexWalk {
	g := &graph{
		ix:    ix,
		reach: make([]uint64, (len(ix.narinfos)+63)/64),
		info:  make([]nodeInfo, len(ix.narinfos)),
	}
	w := &indexWalk{ctx: ctx, st: st, g: g, m: m, storeDir: storeDir, prog: prog}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// run walks the closures of roots (listing indices) with conc workers. It
// may be called again with more roots: what is reachable already is not
// walked twice.
func (w *indexWalk) run(roots []int, conc int) error {
	w.mu.Lock()
	for _, r := range roots {
		w.push(r)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Go(func() { w.work(&walkScratch{}) })
	}
	wg.Wait()
	if w.err != nil {
		return w.err
	}
	return w.ctx.Err()
}

// push marks listing index i reachable and queues it (lock held).
func (w *indexWalk) push(i int) {
	if !w.g.isReach(i) {
		w.g.setReach(i)
		w.queue = append(w.queue, int32(i))
	}
}

// unlocked runs f without the lock, counted as in flight. A worker wakes
// another only here: memo hits are cheap, and handing the lock between
// workers after each of them costs more than the hits themselves.
func (w *indexWalk) unlocked(f func() error) error {
	if len(w.queue) > 0 {
		w.cond.Signal()
	}
	w.inflight++
	w.mu.Unlock()
	err := f()
	w.mu.Lock()
	w.inflight--
	if err == nil {
		err = w.ctx.Err()
	}
	return err
}

// walkScratch is one worker's reused memory: a walk of half a million
// narinfos then allocates little beyond what it keeps, which is what keeps
// the collector (and so the CPU) out of a large cold run.
type walkScratch struct {
	ni      nixcache.NarInfo
	present []uint32
	absent  []nixcache.Hash
}

func (w *indexWalk) work(sc *walkScratch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.queue) == 0 && w.inflight > 0 && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.queue) == 0 {
			w.cond.Broadcast()
			return
		}
		idx := int(w.queue[len(w.queue)-1])
		w.queue = w.queue[:len(w.queue)-1]
		if err := w.visit(idx, sc); err != nil {
			if w.err == nil {
				w.err = err
			}
			w.cond.Broadcast()
			continue
		}
		if len(w.queue) == 0 && w.inflight == 0 {
			w.cond.Broadcast()
		}
	}
}

// visit learns the edges of listing index idx from the memo or by reading
// it (lock held; released for I/O).
func (w *indexWalk) visit(idx int, sc *walkScratch) error {
	e := &w.g.ix.narinfos[idx]
	if w.m.has(idx) {
		if !known(e.mtime) {
			if err := w.unlocked(func() error { return w.stat(e) }); err != nil {
				return err
			}
		}
		if mi := w.m.lookup(idx, e.fp); mi >= 0 {
			w.hit(idx, mi)
			return nil
		}
	}
	var res missResult
	if err := w.unlocked(func() (err error) { res, err = w.read(idx, sc); return err }); err != nil {
		return err
	}
	w.record(res)
	return nil
}

// stat fills in the attributes of a reachable narinfo listed without them.
func (w *indexWalk) stat(e *niEntry) error {
	key := nixcache.NarInfoKey(e.h)
	o, err := w.st.Stat(w.ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: reachable %s vanished after the listing", ErrIntegrity, key)
	case err != nil:
		if w.ctx.Err() != nil {
			return w.ctx.Err()
		}
		return fmt.Errorf("%w: reachable %s: %w", ErrIntegrity, key, err)
	}
	e.setAttrs(o)
	return nil
}

// hit records a memo entry (lock held).
func (w *indexWalk) hit(idx, mi int) {
	g, m := w.g, w.m
	refs := m.refsOf(mi)
	ni := nodeInfo{nar: m.nar[mi], fileSize: m.fileSize[mi], refOff: g.refs.reserve(len(refs)), refN: uint32(len(refs)), deriver: noRef}
	for _, r := range refs {
		if li := m.toListing[r]; li >= 0 {
			g.refs.push(uint32(li))
			w.push(int(li))
		} else {
			g.refs.push(g.encMissing(m.hashes[r]))
			g.danglingRefs++
			g.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[idx].h), m.hashes[r])
		}
	}
	if d := m.deriver[mi]; d != 0 {
		if li := m.toListing[d-1]; li >= 0 {
			ni.deriver = uint32(li)
			w.push(int(li))
		} else {
			ni.deriver = g.encMissing(m.hashes[d-1])
		}
	}
	w.finish(idx, ni)
	g.memoHits++
	w.prog.Advance(PhaseWalk, 1, 0)
}

func (w *indexWalk) finish(idx int, ni nodeInfo) {
	g := w.g
	if ni.nar != 0 && !hasU64(g.ix.narKeys, ni.nar) {
		g.missingNARs++
		g.problem("%s: its NAR is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[idx].h))
	}
	g.info[idx] = ni
	g.reachable++
	g.reachBytes += ni.fileSize
}

// record stores a read narinfo (lock held).
func (w *indexWalk) record(r missResult) {
	g := w.g
	n := len(r.present) + len(r.absent)
	ni := nodeInfo{nar: r.nar, fileSize: r.fileSize, refOff: g.refs.reserve(n), refN: uint32(n), deriver: noRef}
	for _, p := range r.present {
		g.refs.push(p)
		w.push(int(p))
	}
	for _, h := range r.absent {
		g.refs.push(g.encMissing(h))
		g.danglingRefs++
		g.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[r.idx].h), h)
	}
	switch {
	case r.deriver >= 0:
		ni.deriver = uint32(r.deriver)
		w.push(r.deriver)
	case r.derAbsent != nil:
		ni.deriver = g.encMissing(*r.derAbsent)
	}
	w.finish(r.idx, ni)
	g.reads++
	g.readBytes += r.readBytes
	w.prog.Advance(PhaseWalk, 1, r.readBytes)
}

// read reads and parses one listed narinfo (no lock held). Not found is an
// integrity error: the listing has it and something reaches it. The read
// supplies the attributes a keys-only listing left out.
func (w *indexWalk) read(idx int, sc *walkScratch) (missResult, error) {
	ix := w.g.ix
	e := &ix.narinfos[idx]
	res := missResult{idx: idx, deriver: -1, present: sc.present[:0], absent: sc.absent[:0]}
	ni := &sc.ni
	ok, obj, err := readReachableInto(w.ctx, w.st, w.storeDir, e.h, ni)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, fmt.Errorf("%w: reachable %s vanished after the listing", ErrIntegrity, nixcache.NarInfoKey(e.h))
	}
	if !known(e.mtime) {
		e.setAttrs(obj)
	}
	res.readBytes = obj.Size
	if k, ok := ni.NarKey(); ok {
		res.nar = keyHash(k)
	}
	res.fileSize = ni.FileSize
	for _, r := range ni.References {
		if i := ix.find(r); i >= 0 {
			res.present = append(res.present, uint32(i))
		} else {
			res.absent = append(res.absent, r)
		}
	}
	if ni.HasDeriver {
		if i := ix.find(ni.Deriver); i >= 0 {
			res.deriver = i
		} else {
			res.derAbsent = &ni.Deriver
		}
	}
	sc.present, sc.absent = res.present, res.absent // keep any growth
	return res, nil
}

// fillAttrs stats the listed narinfos (narIdx) and other objects (objIdx)
// whose attributes the keys-only listing left out, conc at a time. One that
// vanished since the listing gets goneTime: it is neither young nor deleted.
func fillAttrs(ctx context.Context, st storage.Store, ix *index, narIdx, objIdx []int32, conc int, prog Progress) error {
	total := int64(len(narIdx) + len(objIdx))
	if total == 0 {
		return nil
	}
	prog.Start(PhaseStat, total, -1)
	defer prog.Done(PhaseStat)
	eg, ectx := errgroup.WithContext(ctx)
	// Chunks, not one goroutine per object: a million stats are cheap, a
	// million goroutines are not.
	const chunk = 256
	eg.SetLimit(max(1, conc))
	statInto := func(key string, set func(storage.Object)) error {
		o, err := st.Stat(ectx, key)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			set(storage.Object{})
		case err != nil:
			if ectx.Err() != nil {
				return ectx.Err()
			}
			return fmt.Errorf("%w: listing %s: %w", ErrRootsUnavailable, key, err)
		default:
			set(o)
		}
		return nil
	}
	// One index over both lists: j < len(narIdx) is a narinfo.
	statOne := func(j int) error {
		if j < len(narIdx) {
			e := &ix.narinfos[narIdx[j]]
			return statInto(nixcache.NarInfoKey(e.h), func(o storage.Object) {
				if o.HasAttrs() {
					e.setAttrs(o)
				} else {
					e.mtime = goneTime
				}
			})
		}
		o := ix.objs.at(int(objIdx[j-len(narIdx)]))
		return statInto(ix.key(o), func(a storage.Object) {
			if a.HasAttrs() {
				o.mtime, o.size = a.ModTime.UnixNano(), a.Size
			} else {
				o.mtime = goneTime
			}
		})
	}
	for start := 0; start < int(total); start += chunk {
		end := min(start+chunk, int(total))
		eg.Go(func() error {
			for j := start; j < end; j++ {
				if err := statOne(j); err != nil {
					return err
				}
			}
			prog.Advance(PhaseStat, int64(end-start), 0)
			return nil
		})
	}
	return eg.Wait()
}
