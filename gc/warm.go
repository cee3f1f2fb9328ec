package gc

import (
	"context"
	"fmt"
	"sync"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// warmWalk is the walk when the listing is complete and a memo is loaded.
// It works on listing indices directly: a memo hit is resolved with array
// lookups (memo index → listing index) under the lock, with no request and
// no hashing; only memo misses are read, in parallel, outside the lock.
type warmWalk struct {
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

func runWarmWalk(ctx context.Context, st storage.Store, ix *index, m *memo, roots []int, storeDir string, conc int, prog Progress) (*graph, error) {
	g := &graph{
		ix:      ix,
		reach:   make([]uint64, (len(ix.narinfos)+63)/64),
		info:    make([]nodeInfo, len(ix.narinfos)),
		missIdx: map[nixcache.Hash]uint32{},
	}
	w := &warmWalk{ctx: ctx, st: st, g: g, m: m, storeDir: storeDir, prog: prog}
	w.cond = sync.NewCond(&w.mu)
	for _, r := range roots {
		w.push(r)
	}
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Go(w.work)
	}
	wg.Wait()
	if w.err != nil {
		return nil, w.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return g, nil
}

// push marks listing index i reachable and queues it (lock held).
func (w *warmWalk) push(i int) {
	if !w.g.isReach(i) {
		w.g.setReach(i)
		w.queue = append(w.queue, int32(i))
	}
}

func (w *warmWalk) work() {
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
		before := len(w.queue)
		if mi := w.m.lookup(idx, w.g.ix.narinfos[idx].fp); mi >= 0 {
			w.hit(idx, mi)
		} else {
			w.inflight++
			w.mu.Unlock()
			res, err := w.read(idx)
			w.mu.Lock()
			w.inflight--
			if err == nil {
				err = w.ctx.Err()
			}
			if err != nil {
				if w.err == nil {
					w.err = err
				}
				w.cond.Broadcast()
				continue
			}
			w.record(res)
		}
		for range len(w.queue) - before {
			w.cond.Signal()
		}
		if len(w.queue) == 0 && w.inflight == 0 {
			w.cond.Broadcast()
		}
	}
}

// hit records a memo entry (lock held).
func (w *warmWalk) hit(idx, mi int) {
	g, m := w.g, w.m
	ni := nodeInfo{nar: m.nar[mi], fileSize: m.fileSize[mi], refOff: uint32(len(g.refs)), deriver: noRef}
	for _, r := range m.refs[m.refOff[mi]:m.refOff[mi+1]] {
		if li := m.toListing[r]; li >= 0 {
			g.refs = append(g.refs, uint32(li))
			w.push(int(li))
		} else {
			g.refs = append(g.refs, g.encMissing(m.hashes[r]))
			g.danglingRefs++
			g.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(g.ix.narinfos[idx].h), m.hashes[r])
		}
	}
	ni.refN = uint32(len(g.refs)) - ni.refOff
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

func (w *warmWalk) finish(idx int, ni nodeInfo) {
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
func (w *warmWalk) record(r missResult) {
	g := w.g
	ni := nodeInfo{nar: r.nar, fileSize: r.fileSize, refOff: uint32(len(g.refs)), deriver: noRef}
	for _, p := range r.present {
		g.refs = append(g.refs, p)
		w.push(int(p))
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
// integrity error: the listing has it and something reaches it.
func (w *warmWalk) read(idx int) (missResult, error) {
	ix := w.g.ix
	h := ix.narinfos[idx].h
	res := missResult{idx: idx, deriver: -1}
	ni, n, err := readReachable(w.ctx, w.st, w.storeDir, h)
	if err != nil {
		return res, err
	}
	if ni == nil {
		return res, fmt.Errorf("%w: reachable %s vanished after the listing", ErrIntegrity, nixcache.NarInfoKey(h))
	}
	res.readBytes = n
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
			d := ni.Deriver
			res.derAbsent = &d
		}
	}
	return res, nil
}
