package gc

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// fate is what a prune does with one listed object.
type fate uint8

const (
	keepIt      fate = iota
	deleteIt         // garbage, old enough
	readContent      // realisation, build trace, debuginfo: decided by what it names
)

// objectFate is the keep/delete rule for a listed object other than a
// narinfo, from facts alone: its kind, its mtime (noTime or goneTime if not
// known), the grace cutoff, and whether what keeps it (a reachable narinfo,
// NAR reference or derivation) is absent. It does no I/O.
func objectFate(kind nixcache.Kind, mtime, cutoff int64, unreferenced bool) fate {
	switch {
	case !known(mtime), mtime > cutoff:
		return keepIt // age unknown, or younger than the grace period
	case kind == nixcache.KindRealisation, kind == nixcache.KindBuildTrace, kind == nixcache.KindDebugInfo:
		return readContent
	case unreferenced:
		return deleteIt
	}
	return keepIt
}

// narinfoFate is the rule for a narinfo.
func narinfoFate(reached bool, mtime, cutoff int64) fate {
	if reached || !known(mtime) || mtime > cutoff {
		return keepIt
	}
	return deleteIt
}

// decision is what decide found beyond the plan's lists.
type decision struct {
	reachBytes    uint64
	missingNARs   int64
	firstProblems []string
}

// keepSets are what keeps non-narinfo objects: the NAR key hashes of the
// reachable narinfos (sorted, with a bit set when the listing has the NAR),
// young NARs, and the derivations whose logs are kept.
type keepSets struct {
	nar     []narRef // sorted by NAR key hash
	narSeen []uint64 // bitset over nar: the listing has that NAR
	// narDir[j] is the first index of nar whose key hash has top bits j
	// (narDirBits of them): a lookup searches about eight entries, not all.
	narDir     []uint32
	narDirBits uint
	youngNAR   []uint64
	// drv: first 8 bytes of the derivers of reachable paths that are not in
	// the cache (a deriver that is in the cache is reachable itself).
	drv []uint64
	// markers: the store keys the roots were read from (a --roots prefix
	// may hold a marker whose name looks like a temp file).
	markers map[string]bool
}

func (k *keepSets) keepsNAR(kh uint64, mark bool) bool {
	top := kh >> (64 - k.narDirBits)
	lo, hi := int(k.narDir[top]), int(k.narDir[top+1])
	i, ok := slices.BinarySearchFunc(k.nar[lo:hi], kh, func(n narRef, kh uint64) int { return cmp.Compare(n.kh(), kh) })
	i += lo
	if ok {
		if mark { // concurrently for different objects (decide's parallel pass)
			atomic.OrUint64(&k.narSeen[i/64], 1<<(i%64))
		}
		return true
	}
	_, ok = slices.BinarySearch(k.youngNAR, kh)
	return ok
}

// buildNARDir makes narDir over the sorted nar: about eight entries per
// slot (the hashes are FNV-1a, whose top bits are well mixed).
func (k *keepSets) buildNARDir() {
	k.narDirBits = uint(max(1, bits.Len(uint(len(k.nar)))-3))
	k.narDir = make([]uint32, 1<<k.narDirBits+1)
	j := 0
	for i, n := range k.nar {
		for top := int(n.kh() >> (64 - k.narDirBits)); j <= top; j++ {
			k.narDir[j] = uint32(i)
		}
	}
	for ; j < len(k.narDir); j++ {
		k.narDir[j] = uint32(len(k.nar))
	}
}

func (k *keepSets) keepsDrv(ix *index, h *nixcache.Hash) bool {
	if ix.reachable(h) {
		return true
	}
	_, ok := slices.BinarySearch(k.drv, hashPre(h))
	return ok
}

// unreferenced says whether what would keep o is absent (no I/O).
func (k *keepSets) unreferenced(ix *index, o *objRec, markNAR bool) bool {
	switch o.kind {
	case nixcache.KindListing:
		h, err := nixcache.ParseHash(o.key[:nixcache.HashLen])
		if err != nil || ix.reachable(&h) {
			return false
		}
	case nixcache.KindNAR:
		return !k.keepsNAR(keyHash(o.key), markNAR)
	case nixcache.KindLog:
		h, err := nixcache.LogDrvHash(o.key)
		if err != nil || k.keepsDrv(ix, &h) {
			return false
		}
	case nixcache.KindTemp:
	default:
		return false
	}
	// Whatever its key looks like, an object the URL of a reachable
	// narinfo names is that narinfo's NAR to Nix (I2: "nar/x.nar.tmp" is
	// not a temp file then), and one the roots were read from is a marker.
	return !k.markers[o.key] && !k.keepsNAR(keyHash(o.key), markNAR)
}

// objChunk is how many object records decide handles at a time.
const objChunk = 4096

// decide sorts every listed object into keep or delete, in passes over the
// index's files: the keep sets come from the next memo, then the objects
// (a keys-only listing's candidates are stat'ed, a chunk at a time in
// parallel; a kept object's age does not matter), then what must be read
// to be decided, then the narinfos. Deletions go to the plan's files.
func (p *Plan) decide(ctx context.Context, ix *index, ex *exploration, cutoffT time.Time, storeDir string, conc int) (*decision, error) {
	cutoff := cutoffT.UnixNano()
	d := &decision{reachBytes: ex.reachBytes}
	// The keep sets the walk collected.
	ks := &keepSets{}
	var err error
	if ks.nar, err = readRecords(ex.keepNAR, narRefSize, getNarRef); err != nil {
		return nil, err
	}
	if ks.drv, err = readRecords(ex.keepDrv, 8, binary.BigEndian.Uint64); err != nil {
		return nil, err
	}
	slices.SortFunc(ks.nar, func(a, b narRef) int { return cmp.Compare(a.kh(), b.kh()) })
	ks.narSeen = make([]uint64, (len(ks.nar)+63)/64)
	ks.buildNARDir()
	slices.Sort(ks.drv)
	ks.drv = slices.Compact(ks.drv)
	for _, m := range p.report.Roots.List {
		if !m.Local {
			if ks.markers == nil {
				ks.markers = map[string]bool{}
			}
			ks.markers[m.Source] = true
		}
	}
	if p.delMeta, err = newSpool(p.tmp, "delete-meta"); err != nil {
		return nil, err
	}
	if p.delNAR, err = newSpool(p.tmp, "delete-nar"); err != nil {
		return nil, err
	}
	content, err := newSpool(p.tmp, "content")
	if err != nil {
		return nil, err
	}
	// Counted by kind in arrays (a map lookup per object was a measurable
	// part of a million-object pass); the report's maps are made at the end.
	var del, keep kindCounts
	var buf []byte
	drop := func(o *objRec) error {
		buf = appendObjRec(buf[:0], o)
		del[o.kind].add(o.size)
		return p.deletions(o.kind).write(buf)
	}
	dropNarInfo := func(size int32, h *nixcache.Hash) error {
		return drop(&objRec{kind: nixcache.KindNarInfo, size: int64(size), key: nixcache.NarInfoKey(*h)})
	}

	// Objects, a chunk at a time. One parallel pass per chunk finds what
	// would keep each object, stats those that may go and have no age yet
	// (runs of them: storage.StatMany), decides them and encodes their
	// records; the runs' outputs are then written in listing order. The
	// next chunk is read from the object list meanwhile.
	outs := make([]objRunOut, objChunk)
	statStarted := false
	flush := func(chunk []objRec) error {
		err := parallelRuns(ctx, len(chunk), conc, func(ctx context.Context, start, end int) error {
			out := &outs[start]
			out.reset(end)
			return p.decideRun(ctx, ix, ks, chunk[start:end], cutoff, out)
		})
		var stated int64
		for i := 0; i < len(chunk) && err == nil; i = outs[i].end {
			stated += outs[i].stated
		}
		if stated > 0 {
			if !statStarted {
				p.opts.Progress.Start(PhaseStat, -1, -1)
				statStarted = true
			}
			p.opts.Progress.Advance(PhaseStat, stated, 0)
		}
		if err != nil {
			return err
		}
		for i := 0; i < len(chunk); i = outs[i].end {
			out := &outs[i]
			ks.youngNAR = append(ks.youngNAR, out.youngNAR...)
			del.merge(&out.del)
			keep.merge(&out.keep)
			for _, w := range []struct {
				sp *spool
				b  []byte
			}{{p.delMeta, out.meta}, {p.delNAR, out.nar}, {content, out.content}} {
				if len(w.b) > 0 {
					if err := w.sp.write(w.b); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	if err := ix.forObjectChunks(ctx, objChunk, flush); err != nil {
		return nil, err
	}
	p.opts.Progress.Done(PhaseStat)
	// A debuginfo pointing into an upload in flight (a young NAR) is kept.
	slices.Sort(ks.youngNAR)

	// What is decided by its content: read in parallel, a chunk at a time.
	if err := content.finish(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := p.readContent(ctx, ix, ks, content, storeDir, conc, drop, func(o *objRec) { keep[o.kind].add(o.size) }); err != nil {
		return nil, err
	}
	p.phaseDone(PhaseMeta, t0)
	content.f.Close()

	// Narinfos, decided in id order; a real prune on a local store deletes
	// them in listing order (listingOrder says why).
	var byListing *listingOrder
	if p.st.Capabilities().Local && !p.opts.DryRun {
		if byListing, err = newListingOrder(p.tmp, ix.n); err != nil {
			return nil, err
		}
	}
	err = ix.forNarInfos(false, func(start int, recs []niRec) error {
		for k := range recs {
			r := &recs[k]
			if narinfoFate(ix.isReach(start+k), r.mtime, cutoff) == keepIt {
				keep[nixcache.KindNarInfo].add(int64(r.size))
				continue
			}
			if byListing != nil {
				if err := byListing.add(r); err != nil {
					return err
				}
				continue
			}
			if err := dropNarInfo(r.size, &r.h); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && byListing != nil {
		err = byListing.each(func(r *posRec) error { return dropNarInfo(r.size, &r.h) })
	}
	if err != nil {
		return nil, err
	}
	if err := p.delMeta.finish(); err != nil {
		return nil, err
	}
	if err := p.delNAR.finish(); err != nil {
		return nil, err
	}

	// Reachable narinfos whose NAR the listing does not have (a NAR that
	// several of them share counts for each: all but the first of a run
	// of equal hashes follow the first's mark).
	var suspects []nixcache.Hash
	seen := false
	for i, n := range ks.nar {
		if i == 0 || n.kh() != ks.nar[i-1].kh() {
			seen = ks.narSeen[i/64]&(1<<(i%64)) != 0
		}
		if !seen {
			h, err := ix.hashOf(int(n.id))
			if err != nil {
				return nil, err
			}
			suspects = append(suspects, h)
		}
	}
	// Each is read again and its NAR stat'ed before it counts as missing:
	// the listing may have passed the NAR's key before it was written while
	// its narinfo, written after it, was still ahead (a writer that skips
	// the lock, or a snapshot older than the push). Such a NAR was not
	// listed, so it is not deleted either.
	if len(suspects) > 0 {
		present := make([]bool, len(suspects))
		// loose: the narinfo's URL is not a plain nar/ key
		// (nixcache.NarKeyFromPlainURL: "/nar/x", "../nar/x"). Clients
		// resolve such a URL differently, so the object it names in this
		// cache is kept when there but never required.
		loose := make([]string, len(suspects))
		err := parallel(ctx, len(suspects), conc, func(ctx context.Context, j int) error {
			var ni nixcache.NarInfo
			ok, _, err := readReachableInto(ctx, p.st, storeDir, suspects[j], &ni)
			if err != nil || !ok {
				return err
			}
			if k, ok := ni.NarKey(); ok {
				if _, plain := nixcache.NarKeyFromPlainURL(ni.URL); !plain {
					loose[j] = ni.URL
					return nil
				}
				o, err := statKey(ctx, p.st, k)
				if err != nil {
					return err
				}
				present[j] = o.HasAttrs()
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for j, h := range suspects {
			if loose[j] != "" {
				p.warn("%s: its URL %q names nothing in this cache that clients agree on; nothing is kept for it", nixcache.NarInfoKey(h), loose[j])
				continue
			}
			if present[j] {
				if p.report.Snapshot != nil {
					p.report.Snapshot.NewNARs++
				} else {
					p.report.LateNARs++
				}
				continue
			}
			d.missingNARs++
			if len(d.firstProblems) < 20 {
				d.firstProblems = append(d.firstProblems, fmt.Sprintf("%s: its NAR is not in the cache", nixcache.NarInfoKey(h)))
			}
		}
	}

	p.spooled = del
	p.report.Delete, p.report.Keep = del.byName(), keep.byName()
	total := del.sum(nil)
	if len(p.delMarkers) > 0 {
		p.report.Delete[nixcache.KindRoot.String()] = Count{Objects: int64(len(p.delMarkers))}
		total.Objects += int64(len(p.delMarkers))
	}
	p.report.DeleteTotal = total
	return d, nil
}

// readContent decides the realisations, build traces and debuginfo that may
// go by what they name: a realisation's output path must be reachable, a
// debuginfo's NAR kept. One that cannot be read or parsed is kept.
func (p *Plan) readContent(ctx context.Context, ix *index, ks *keepSets, content *spool, storeDir string, conc int, drop func(*objRec) error, kept func(*objRec)) error {
	prog := p.opts.Progress
	prog.Start(PhaseMeta, -1, -1)
	defer prog.Done(PhaseMeta)
	var chunk []objRec
	flush := func() error {
		drops := make([]bool, len(chunk))
		var mu sync.Mutex
		err := parallel(ctx, len(chunk), conc, func(ctx context.Context, j int) error {
			o := &chunk[j]
			defer prog.Advance(PhaseMeta, 1, o.size)
			data, err := readAll(ctx, p.st, o.key, 1<<20)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !errors.Is(err, storage.ErrNotFound) {
					mu.Lock()
					p.warn("%s kept: cannot read it: %v", o.key, err)
					mu.Unlock()
				}
				return nil
			}
			var keepIt bool
			if o.kind == nixcache.KindDebugInfo {
				nk, err := nixcache.DebugInfoNarKey(o.key, data)
				keepIt = err != nil || ks.keepsNAR(keyHash(nk), false)
			} else {
				h, err := nixcache.RealisationOutPath(data, storeDir)
				keepIt = err != nil || ix.reachable(&h)
			}
			drops[j] = !keepIt
			return nil
		})
		if err != nil {
			return err
		}
		for j := range chunk {
			if drops[j] {
				if err := drop(&chunk[j]); err != nil {
					return err
				}
			} else {
				kept(&chunk[j])
			}
		}
		chunk = chunk[:0]
		return nil
	}
	r := content.reader()
	head := make([]byte, objRecHead)
	for {
		var o objRec
		err := readObjRec(r, head, &o)
		if err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("gc: reading a temporary file: %w", err)
		}
		chunk = append(chunk, o)
		if len(chunk) == objChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// kindCounts counts objects by kind.
type kindCounts [nixcache.NumKinds]Count

func (c *kindCounts) merge(o *kindCounts) {
	for k := range c {
		c[k].Objects += o[k].Objects
		c[k].Bytes += o[k].Bytes
	}
}

// sum is the count of the kinds in (all when in is nil).
func (c *kindCounts) sum(in func(nixcache.Kind) bool) Count {
	var t Count
	for k, n := range c {
		if in == nil || in(nixcache.Kind(k)) {
			t.Objects += n.Objects
			t.Bytes += n.Bytes
		}
	}
	return t
}

// byName is the report's form: the kinds seen, by name.
func (c *kindCounts) byName() map[string]Count {
	m := map[string]Count{}
	for k, n := range c {
		if n.Objects > 0 {
			m[nixcache.Kind(k).String()] = n
		}
	}
	return m
}

// objRunOut is what deciding one run of a chunk's objects produced: the
// encoded records for each deletion list and for the content pass, the
// young NARs, the counts, and how many objects it stat'ed.
type objRunOut struct {
	end                int // the next run's start in the chunk
	meta, nar, content []byte
	youngNAR           []uint64
	del, keep          kindCounts
	stated             int64
	keys               []string
	idx                []int
	unref              []bool
}

func (o *objRunOut) reset(end int) {
	o.end = end
	o.meta, o.nar, o.content = o.meta[:0], o.nar[:0], o.content[:0]
	o.youngNAR = o.youngNAR[:0]
	o.del, o.keep = kindCounts{}, kindCounts{}
	o.stated = 0
	o.keys, o.idx = o.keys[:0], o.idx[:0]
}

// decideRun decides a run of listed objects other than narinfos: what
// would keep each (no I/O), the age of those that may go (one StatMany),
// then each one's fate, encoded into out.
func (p *Plan) decideRun(ctx context.Context, ix *index, ks *keepSets, objs []objRec, cutoff int64, out *objRunOut) error {
	out.unref = slices.Grow(out.unref[:0], len(objs))[:len(objs)]
	for i := range objs {
		o := &objs[i]
		u := ks.unreferenced(ix, o, true)
		out.unref[i] = u
		if o.mtime == noTime && (u || o.kind == nixcache.KindRealisation || o.kind == nixcache.KindBuildTrace || o.kind == nixcache.KindDebugInfo) {
			out.keys = append(out.keys, o.key)
			out.idx = append(out.idx, i)
		}
	}
	out.stated = int64(len(out.keys))
	err := storage.StatMany(ctx, p.st, out.keys, func(j int, a storage.Object, err error) error {
		if a, err = statResult(ctx, out.keys[j], a, err); err != nil {
			return err
		}
		o := &objs[out.idx[j]]
		if a.HasAttrs() {
			o.mtime, o.size = a.ModTime.UnixNano(), a.Size
		} else {
			o.mtime = goneTime
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range objs {
		o := &objs[i]
		if o.kind == nixcache.KindNAR && o.mtime > cutoff {
			out.youngNAR = append(out.youngNAR, keyHash(o.key))
		}
		switch objectFate(o.kind, o.mtime, cutoff, out.unref[i]) {
		case deleteIt:
			out.del[o.kind].add(o.size)
			if inNARPhase(o.kind) {
				out.nar = appendObjRec(out.nar, o)
			} else {
				out.meta = appendObjRec(out.meta, o)
			}
		case readContent:
			out.content = appendObjRec(out.content, o)
		default:
			out.keep[o.kind].add(o.size)
		}
	}
	return nil
}
