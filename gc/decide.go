package gc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
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
	nar      []narRef // sorted by NAR key hash
	narSeen  []uint64 // bitset over nar: the listing has that NAR
	youngNAR []uint64
	// drv: first 8 bytes of the derivers of reachable paths that are not in
	// the cache (a deriver that is in the cache is reachable itself).
	drv []uint64
}

func (k *keepSets) keepsNAR(kh uint64, mark bool) bool {
	i, ok := slices.BinarySearchFunc(k.nar, kh, func(n narRef, kh uint64) int { return cmp.Compare(n.kh(), kh) })
	if ok {
		if mark { // concurrently for different objects (decide's parallel pass)
			atomic.OrUint64(&k.narSeen[i/64], 1<<(i%64))
		}
		return true
	}
	_, ok = slices.BinarySearch(k.youngNAR, kh)
	return ok
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
		return err == nil && !ix.reachable(&h)
	case nixcache.KindNAR:
		return !k.keepsNAR(keyHash(o.key), markNAR)
	case nixcache.KindLog:
		h, err := nixcache.LogDrvHash(o.key)
		return err == nil && !k.keepsDrv(ix, &h)
	case nixcache.KindTemp:
		return true
	}
	return false
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
	// The keep sets the walk collected (ex gives them up).
	ks := &keepSets{nar: ex.keepNAR, drv: ex.keepDrv}
	ex.keepNAR, ex.keepDrv = nil, nil
	slices.SortFunc(ks.nar, func(a, b narRef) int { return cmp.Compare(a.kh(), b.kh()) })
	ks.narSeen = make([]uint64, (len(ks.nar)+63)/64)
	slices.Sort(ks.drv)
	ks.drv = slices.Compact(ks.drv)
	var err error
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
	del := map[string]*Count{}
	keep := map[string]*Count{}
	count := func(m map[string]*Count, k nixcache.Kind, size int64) {
		c := m[k.String()]
		if c == nil {
			c = &Count{}
			m[k.String()] = c
		}
		c.add(size)
	}
	var buf []byte
	drop := func(o *objRec) error {
		buf = appendObjRec(buf[:0], o)
		count(del, o.kind, o.size)
		if o.kind == nixcache.KindNAR {
			return p.delNAR.write(buf)
		}
		return p.delMeta.write(buf)
	}

	// Objects, a chunk at a time: in one parallel pass, find what would
	// keep each and stat those that may go and have no age yet (runs of
	// them: storage.StatMany); then decide in listing order.
	chunk := make([]objRec, 0, objChunk)
	unref := make([]bool, objChunk)
	var stated atomic.Int64
	statStarted := false
	flush := func() error {
		stated.Store(0)
		err := parallelRuns(ctx, len(chunk), conc, func(ctx context.Context, start, end int) error {
			var keys []string
			var idx []int
			for i := start; i < end; i++ {
				o := &chunk[i]
				u := ks.unreferenced(ix, o, true)
				unref[i] = u
				if o.mtime == noTime && (u || o.kind == nixcache.KindRealisation || o.kind == nixcache.KindBuildTrace || o.kind == nixcache.KindDebugInfo) {
					keys = append(keys, o.key)
					idx = append(idx, i)
				}
			}
			stated.Add(int64(len(keys)))
			return storage.StatMany(ctx, p.st, keys, func(j int, a storage.Object, err error) error {
				if a, err = statResult(ctx, keys[j], a, err); err != nil {
					return err
				}
				o := &chunk[idx[j]]
				if a.HasAttrs() {
					o.mtime, o.size = a.ModTime.UnixNano(), a.Size
				} else {
					o.mtime = goneTime
				}
				return nil
			})
		})
		if n := stated.Load(); n > 0 {
			if !statStarted {
				p.opts.Progress.Start(PhaseStat, -1, -1)
				statStarted = true
			}
			p.opts.Progress.Advance(PhaseStat, n, 0)
		}
		if err != nil {
			return err
		}
		for i := range chunk {
			o := &chunk[i]
			if o.kind == nixcache.KindNAR && o.mtime > cutoff {
				ks.youngNAR = append(ks.youngNAR, keyHash(o.key))
			}
			switch objectFate(o.kind, o.mtime, cutoff, unref[i]) {
			case deleteIt:
				if err := drop(o); err != nil {
					return err
				}
			case readContent:
				buf = appendObjRec(buf[:0], o)
				if err := content.write(buf); err != nil {
					return err
				}
			default:
				count(keep, o.kind, o.size)
			}
		}
		chunk = chunk[:0]
		return nil
	}
	err = ix.forObjects(func(o *objRec) error {
		chunk = append(chunk, *o)
		if len(chunk) == objChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, err
	}
	p.opts.Progress.Done(PhaseStat)
	// A debuginfo pointing into an upload in flight (a young NAR) is kept.
	slices.Sort(ks.youngNAR)

	// What is decided by its content: read in parallel, a chunk at a time.
	if err := content.finish(); err != nil {
		return nil, err
	}
	if err := p.readContent(ctx, ix, ks, content, storeDir, conc, drop, func(o *objRec) { count(keep, o.kind, o.size) }); err != nil {
		return nil, err
	}
	content.f.Close()

	// Narinfos, in id order.
	err = ix.forNarInfos(false, func(start int, recs []niRec) error {
		for k := range recs {
			r := &recs[k]
			if narinfoFate(ix.isReach(start+k), r.mtime, cutoff) == keepIt {
				count(keep, nixcache.KindNarInfo, int64(r.size))
				continue
			}
			if err := drop(&objRec{kind: nixcache.KindNarInfo, size: int64(r.size), key: nixcache.NarInfoKey(r.h)}); err != nil {
				return err
			}
		}
		return nil
	})
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
	if len(suspects) > 0 {
		present := make([]bool, len(suspects))
		if p.opts.Snapshot != nil {
			err := parallel(ctx, len(suspects), conc, func(ctx context.Context, j int) error {
				var ni nixcache.NarInfo
				ok, _, err := readReachableInto(ctx, p.st, storeDir, suspects[j], &ni)
				if err != nil || !ok {
					return err
				}
				if k, ok := ni.NarKey(); ok {
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
		}
		for j, h := range suspects {
			if present[j] {
				p.report.Snapshot.NewNARs++
				continue
			}
			d.missingNARs++
			if len(d.firstProblems) < 20 {
				d.firstProblems = append(d.firstProblems, fmt.Sprintf("%s: its NAR is not in the cache", nixcache.NarInfoKey(h)))
			}
		}
	}

	p.report.Delete, p.report.Keep = map[string]Count{}, map[string]Count{}
	var total Count
	for k, c := range del {
		p.report.Delete[k] = *c
		total.Objects += c.Objects
		total.Bytes += c.Bytes
	}
	for k, c := range keep {
		p.report.Keep[k] = *c
	}
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
