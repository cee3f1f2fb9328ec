package gc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

const (
	noRef      = ^uint32(0)
	missingBit = uint32(1) << 31
)

// nodeInfo is what the plan keeps per reachable listed narinfo (32 bytes).
type nodeInfo struct {
	nar      uint64 // keyHash of the NAR key, 0 = no NAR in this cache
	fileSize uint64
	refOff   uint32 // into graph.refs (blocks offset)
	refN     uint32
	deriver  uint32 // encoded ref, noRef = none
}

// graph is the reachable part of the cache, indexed like the listing. A ref
// is encoded as a listing index, or missingBit|i for graph.missing[i] (a
// hash that is not in the listing).
type graph struct {
	ix      *index
	reach   []uint64 // bitset over ix.narinfos
	info    []nodeInfo
	refs    blocks[uint32]
	missing []nixcache.Hash

	reachable     int
	reachBytes    uint64
	memoHits      int64
	reads         int64
	readBytes     int64
	danglingRefs  int64
	missingNARs   int64
	missingRoots  []nixcache.Hash
	firstProblems []string
}

func (g *graph) isReach(i int) bool { return g.reach[i/64]&(1<<(i%64)) != 0 }
func (g *graph) setReach(i int)     { g.reach[i/64] |= 1 << (i % 64) }

func (g *graph) hashOf(ref uint32) nixcache.Hash {
	if ref&missingBit != 0 {
		return g.missing[ref&^missingBit]
	}
	return g.ix.narinfos[ref].h
}

// encMissing encodes a hash that is not in the listing. It does not
// deduplicate (an absent deriver is usually named once, and a map of half a
// million hashes costs more than the repeats); encodeMemo does.
func (g *graph) encMissing(h nixcache.Hash) uint32 {
	g.missing = append(g.missing, h)
	return missingBit | uint32(len(g.missing)-1)
}

func (g *graph) problem(format string, args ...any) {
	if len(g.firstProblems) < 20 {
		g.firstProblems = append(g.firstProblems, fmt.Sprintf(format, args...))
	}
}

// Walk node states.
const (
	stQueued   uint8 = iota // to be read (or being read)
	stPresent               // read: edges known
	stAbsent                // no narinfo (Get said not found, or not listed)
	stDeferred              // a deriver seen before the listing was complete
)

// wnode is one store path the walk has seen, keyed by hash (the walk can
// run before the listing is complete).
type wnode struct {
	h        nixcache.Hash
	state    uint8
	deriver  bool // only ever seen as a Deriver
	nar      uint64
	fileSize uint64
	refOff   uint32
	refN     uint32
	der      uint32 // wnode index, noRef = none
}

type visitResult struct {
	node      uint32
	absent    bool
	nar       uint64
	fileSize  uint64
	refs      []nixcache.Hash
	deriver   *nixcache.Hash
	readBytes int64
}

// walker is the cold walk (no memo): it discovers the closure of the roots
// through References and Deriver while the store listing is still running,
// so the listing and the reads overlap. It reads every referenced narinfo
// it meets, and follows derivers (which are usually not in a cache) only
// once the listing says they are there, so an absent deriver costs no
// request. warmWalk (warm.go) is the walk with a memo.
type walker struct {
	ctx      context.Context
	st       storage.Store
	storeDir string
	prog     Progress

	mu       sync.Mutex
	cond     *sync.Cond
	ix       *index // nil until the listing is complete
	nodes    []wnode
	byHash   map[nixcache.Hash]uint32
	refs     []uint32
	queue    []uint32
	inflight int
	err      error

	reads, readBytes int64
}

func newWalker(ctx context.Context, st storage.Store, storeDir string, prog Progress) *walker {
	w := &walker{ctx: ctx, st: st, storeDir: storeDir, prog: prog, byHash: map[nixcache.Hash]uint32{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// node returns the index of h's node, creating it (lock held). A new node
// is queued unless it is a deriver, or the listing is known and lacks it.
func (w *walker) node(h nixcache.Hash, asDeriver bool) uint32 {
	if i, ok := w.byHash[h]; ok {
		n := &w.nodes[i]
		if !asDeriver && n.state == stDeferred {
			n.state, n.deriver = stQueued, false
			w.queue = append(w.queue, i)
		}
		return i
	}
	i := uint32(len(w.nodes))
	n := wnode{h: h, der: noRef, deriver: asDeriver}
	switch {
	case w.ix != nil && w.ix.find(h) < 0:
		n.state = stAbsent
	case asDeriver && w.ix == nil:
		n.state = stDeferred
	default:
		n.state = stQueued
		w.queue = append(w.queue, i)
	}
	w.nodes = append(w.nodes, n)
	w.byHash[h] = i
	return i
}

// addRoots queues hashes as roots (lock held). A root already found absent
// is read again: it may have been uploaded since (a young narinfo).
func (w *walker) addRoots(hs []nixcache.Hash) {
	for _, h := range hs {
		i := w.node(h, false)
		if n := &w.nodes[i]; n.state == stAbsent && w.ix != nil && w.ix.find(h) >= 0 {
			n.state = stQueued
			w.queue = append(w.queue, i)
		}
	}
	w.cond.Broadcast()
}

// listed is called once the listing is complete (lock not held): deferred
// derivers that are in the cache are queued, the others are absent, and
// extra roots (young narinfos) are added.
func (w *walker) listed(ix *index, extra []nixcache.Hash) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ix = ix
	for i := range w.nodes {
		n := &w.nodes[i]
		if n.state == stDeferred {
			if ix.find(n.h) >= 0 {
				n.state = stQueued
				w.queue = append(w.queue, uint32(i))
			} else {
				n.state = stAbsent
			}
		}
	}
	w.addRoots(extra)
}

// run works the queue with conc workers until it is empty, nothing is in
// flight and the listing is complete (or an error).
func (w *walker) run(conc int) error {
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Go(w.work)
	}
	wg.Wait()
	if w.err != nil {
		return w.err
	}
	return w.ctx.Err()
}

// fail stops the walk (from outside, e.g. the listing failed).
func (w *walker) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *walker) work() {
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && (w.inflight > 0 || w.ix == nil) && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.queue) == 0 {
			w.cond.Broadcast()
			w.mu.Unlock()
			return
		}
		i := w.queue[len(w.queue)-1]
		w.queue = w.queue[:len(w.queue)-1]
		h := w.nodes[i].h
		w.inflight++
		w.mu.Unlock()

		res, err := w.visit(i, h)

		w.mu.Lock()
		w.inflight--
		if err == nil && w.ctx.Err() != nil {
			err = w.ctx.Err()
		}
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			w.cond.Broadcast()
		} else {
			before := len(w.queue)
			w.record(res)
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

// record stores one visit (lock held).
func (w *walker) record(r visitResult) {
	n := &w.nodes[r.node]
	if r.absent {
		n.state = stAbsent
		return
	}
	refOff := uint32(len(w.refs))
	for _, h := range r.refs {
		w.refs = append(w.refs, w.node(h, false))
	}
	der := noRef
	if r.deriver != nil {
		der = w.node(*r.deriver, true)
	}
	n = &w.nodes[r.node] // w.nodes may have grown
	n.state, n.nar, n.fileSize, n.refOff, n.refN, n.der = stPresent, r.nar, r.fileSize, refOff, uint32(len(w.refs))-refOff, der
	w.readBytes += r.readBytes
	w.reads++
}

// visit learns one narinfo's edges by reading it. No lock held.
func (w *walker) visit(node uint32, h nixcache.Hash) (visitResult, error) {
	res := visitResult{node: node}
	ni, obj, err := readReachable(w.ctx, w.st, w.storeDir, h)
	if err != nil {
		return res, err
	}
	if ni == nil {
		res.absent = true
		return res, nil
	}
	res.readBytes = obj.Size
	if k, ok := ni.NarKey(); ok {
		res.nar = keyHash(k)
	}
	res.fileSize = ni.FileSize
	res.refs = ni.References
	if ni.HasDeriver {
		d := ni.Deriver
		res.deriver = &d
	}
	return res, nil
}

// graph converts the finished walk to the listing-indexed graph the plan
// and the memo use, and checks what the walk found: a reachable narinfo
// the listing has but that could not be read, references to absent paths,
// NARs missing from the listing.
func (w *walker) graph(ix *index, roots []nixcache.Hash) (*graph, error) {
	g := &graph{
		ix:    ix,
		reach: make([]uint64, (len(ix.narinfos)+63)/64),
		info:  make([]nodeInfo, len(ix.narinfos)),
		reads: w.reads, readBytes: w.readBytes,
	}
	for _, h := range roots {
		if i, ok := w.byHash[h]; !ok || w.nodes[i].state != stPresent {
			g.missingRoots = append(g.missingRoots, h)
		}
	}
	w.byHash = nil // the largest walk structure: free it before the graph grows
	listIdx := make([]int32, len(w.nodes))
	for i := range w.nodes {
		listIdx[i] = int32(ix.find(w.nodes[i].h))
		if w.nodes[i].state == stPresent && listIdx[i] >= 0 {
			g.setReach(int(listIdx[i]))
		}
	}
	enc := func(n uint32) uint32 {
		if li := listIdx[n]; li >= 0 && w.nodes[n].state == stPresent {
			return uint32(li)
		}
		return g.encMissing(w.nodes[n].h)
	}
	for i := range w.nodes {
		n := &w.nodes[i]
		li := listIdx[i]
		if n.state != stPresent || li < 0 {
			if n.state == stAbsent && li >= 0 && !n.deriver {
				// Listed, reachable, yet not found when read.
				return nil, fmt.Errorf("%w: reachable %s is listed but could not be read", ErrIntegrity, nixcache.NarInfoKey(n.h))
			}
			continue
		}
		ni := nodeInfo{nar: n.nar, fileSize: n.fileSize, refOff: g.refs.reserve(int(n.refN)), refN: n.refN, deriver: noRef}
		for _, r := range w.refs[n.refOff : n.refOff+n.refN] {
			g.refs.push(enc(r))
			if w.nodes[r].state == stAbsent {
				g.danglingRefs++
				g.problem("%s references %s, which is not in the cache", nixcache.NarInfoKey(n.h), w.nodes[r].h)
			}
		}
		if n.der != noRef {
			ni.deriver = enc(n.der)
		}
		if n.nar != 0 && !hasU64(ix.narKeys, n.nar) {
			g.missingNARs++
			g.problem("%s: its NAR is not in the cache", nixcache.NarInfoKey(n.h))
		}
		g.info[li] = ni
		g.reachable++
		g.reachBytes += n.fileSize
	}
	return g, nil
}

var narinfoBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// readReachable reads and checks the narinfo of h, a path something reaches,
// and returns it with the attributes of the version read. An absent narinfo
// is a nil NarInfo and no error: the cold walk meets references that are not
// in the cache, the warm walk treats that as an integrity error. Anything
// unreadable, unparseable or describing another path is ErrIntegrity: the
// pruner never guesses a reachable path's edges.
func readReachable(ctx context.Context, st storage.Store, storeDir string, h nixcache.Hash) (*nixcache.NarInfo, storage.Object, error) {
	ni := &nixcache.NarInfo{}
	ok, obj, err := readReachableInto(ctx, st, storeDir, h, ni)
	if !ok {
		ni = nil
	}
	return ni, obj, err
}

// readReachableInto is readReachable parsing into *ni (reused by a walk
// worker); ok is false if the narinfo is absent or on error.
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
