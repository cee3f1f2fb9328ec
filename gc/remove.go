package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

var (
	// ErrRooted: a path asked to be removed is still kept by a root; the
	// error is a *RootedError saying by which chain. Nothing was deleted.
	ErrRooted = errors.New("still needed by a root")
	// ErrNotInCache: a path asked to be removed has no narinfo in the cache.
	ErrNotInCache = errors.New("not in the cache")
)

// RootedError is the refusal of a removal: Chain is the shortest way a root
// keeps Hash (kiss why's answer).
type RootedError struct {
	Hash  nixcache.Hash
	Chain Chain
	// Root names the root: the marker's source, or "a young narinfo".
	Root string
	// Path is the chain by hash, from the path the root names to Hash.
	Path []nixcache.Hash
}

func (e *RootedError) Error() string {
	hs := make([]string, len(e.Path))
	for i, h := range e.Path {
		hs[i] = h.String()
	}
	return fmt.Sprintf("%s is %v: %s keeps it: %s", e.Hash, ErrRooted, e.Root, strings.Join(hs, " → "))
}

func (e *RootedError) Unwrap() error { return ErrRooted }

// RootName says who a chain starts from, for messages.
func (v *View) RootName(c Chain) string {
	if c.Marker >= 0 {
		return "marker " + v.markers[c.Marker].Source
	}
	return "the young narinfo " + nixcache.NarInfoKey(v.Hash(c.Steps[0].ID)) + " (an upload within the grace period)"
}

// Removal plans deleting the store paths targets now (kiss rm): each one's
// narinfo, .ls, realisations and build traces naming it, its build log
// unless another path still kept needs that derivation's log, and its NAR
// unless another narinfo still names it (with the debuginfo links into that
// NAR). It refuses, deleting nothing, if a root — a marker, or a young
// narinfo other than the targets — still keeps a target (a *RootedError for
// each), or if a target is not in the cache (ErrNotInCache).
//
// The plan executes like a prune's (Execute: metadata before NARs, the lease
// confirmed before every batch) and does not rewrite the closure memo.
// To be sure no other narinfo names a NAR it deletes, it reads every narinfo
// no root reaches (a prune just before makes that cheap).
func (v *View) Removal(ctx context.Context, targets []nixcache.Hash) (*Plan, error) {
	ix, g := v.ix, v.g
	isTarget := map[PathID]bool{}
	var errs []error
	for _, h := range targets {
		id, ok := v.Lookup(h)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %w", nixcache.NarInfoKey(h), ErrNotInCache))
			continue
		}
		isTarget[id] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	skip := func(id PathID) bool { return isTarget[id] }
	for id := range isTarget {
		if c, ok := v.ShortestChain(id, skip); ok {
			re := &RootedError{Hash: v.Hash(id), Chain: c, Root: v.RootName(c)}
			for _, s := range c.Steps {
				re.Path = append(re.Path, v.Hash(s.ID))
			}
			errs = append(errs, re)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	opts := v.opts
	opts.NoMemo = true
	p := &Plan{st: v.st, opts: opts, log: opts.Logger, ix: ix, g: g, now: v.now}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.report = Report{Store: v.st.URL(), Now: v.now, Grace: Duration(v.grace), Concurrency: v.conc, Phases: map[string]float64{}}

	// Each target's narinfo, read afresh: its NAR and deriver.
	narOf := map[uint64]string{}      // keyHash → key of a target's NAR
	drvOf := map[nixcache.Hash]bool{} // derivations whose logs may go
	for id := range isTarget {
		p.delNarInfo = append(p.delNarInfo, int32(id))
		drvOf[v.Hash(id)] = true // the target may be a .drv itself
		ni, _, err := readReachable(ctx, v.st, v.storeDir, v.Hash(id))
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			p.warn("%v: its NAR and log are left for the next prune", err)
			continue
		case ni == nil:
			return nil, fmt.Errorf("%s: %w (it vanished since the listing)", nixcache.NarInfoKey(v.Hash(id)), ErrNotInCache)
		}
		if k, ok := ni.NarKey(); ok {
			narOf[keyHash(k)] = k
		}
		if ni.HasDeriver {
			drvOf[ni.Deriver] = true
		}
	}

	// A NAR goes only if no other narinfo names it: the reachable ones are
	// known, the others are read.
	keepDrv := map[nixcache.Hash]bool{}
	for i := range ix.narinfos {
		if !g.isReach(i) || isTarget[PathID(i)] {
			continue
		}
		ni := g.info[i]
		if k, ok := narOf[ni.nar]; ok {
			p.warn("%s is kept: %s names it too", k, nixcache.NarInfoKey(ix.narinfos[i].h))
			delete(narOf, ni.nar)
		}
		keepDrv[ix.narinfos[i].h] = true
		if ni.deriver != noRef {
			keepDrv[g.hashOf(ni.deriver)] = true
		}
	}
	if len(narOf) > 0 {
		if err := v.dropSharedNARs(ctx, isTarget, narOf, p); err != nil {
			return nil, err
		}
	}

	// The other objects that belong to a target.
	var metaIdx []int32
	for i := range ix.objs.len() {
		o := ix.objs.at(i)
		switch o.kind {
		case nixcache.KindListing:
			h, err := nixcache.ParseHash(ix.key(o)[:nixcache.HashLen])
			if id, ok := v.Lookup(h); err == nil && ok && isTarget[id] {
				p.delObjs = append(p.delObjs, int32(i))
			}
		case nixcache.KindNAR:
			if narOf[o.kh] == ix.key(o) {
				p.delNAR = append(p.delNAR, int32(i))
			}
		case nixcache.KindLog:
			if h, err := nixcache.LogDrvHash(ix.key(o)); err == nil && drvOf[h] && !keepDrv[h] {
				p.delObjs = append(p.delObjs, int32(i))
			}
		case nixcache.KindRealisation, nixcache.KindBuildTrace, nixcache.KindDebugInfo:
			metaIdx = append(metaIdx, int32(i))
		}
	}
	drop := make([]bool, len(metaIdx))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(v.conc)
	for j, i := range metaIdx {
		o := ix.objs.at(int(i))
		key := ix.key(o)
		eg.Go(func() error {
			data, err := readAll(ectx, v.st, key, 1<<20)
			if err != nil {
				if ectx.Err() != nil {
					return ectx.Err()
				}
				return nil // gone, or unreadable: not ours to judge
			}
			if o.kind == nixcache.KindDebugInfo {
				nk, err := nixcache.DebugInfoNarKey(key, data)
				drop[j] = err == nil && narOf[keyHash(nk)] == nk
				return nil
			}
			h, err := nixcache.RealisationOutPath(data, v.storeDir)
			if err == nil {
				id, ok := v.Lookup(h)
				drop[j] = ok && isTarget[id]
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	for j, i := range metaIdx {
		if drop[j] {
			p.delObjs = append(p.delObjs, i)
		}
	}

	// Sizes of what goes (a keys-only listing did not give them).
	var unknownObjs []int32
	for _, list := range [][]int32{p.delObjs, p.delNAR} {
		for _, i := range list {
			if !known(ix.objs.at(int(i)).mtime) {
				unknownObjs = append(unknownObjs, i)
			}
		}
	}
	if err := fillAttrs(ctx, v.st, ix, nil, unknownObjs, v.conc, v.opts.Progress); err != nil {
		return nil, err
	}
	p.report.Delete = map[string]Count{}
	for d := range p.Deletions() {
		c := p.report.Delete[d.Kind]
		c.add(d.Size)
		p.report.Delete[d.Kind] = c
		p.report.DeleteTotal.add(d.Size)
	}
	return p, nil
}

// dropSharedNARs reads every narinfo no root reaches (but the targets) and
// removes from narOf the NARs one of them names: deleting those would leave
// that narinfo without its NAR (I2).
func (v *View) dropSharedNARs(ctx context.Context, isTarget map[PathID]bool, narOf map[uint64]string, p *Plan) error {
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(v.conc)
	for i := range v.ix.narinfos {
		if v.g.isReach(i) || isTarget[PathID(i)] {
			continue
		}
		h := v.ix.narinfos[i].h
		eg.Go(func() error {
			key := nixcache.NarInfoKey(h)
			data, err := readAll(ectx, v.st, key, nixcache.MaxNarInfoSize)
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			}
			if err != nil {
				if ectx.Err() != nil {
					return ectx.Err()
				}
				return fmt.Errorf("%s cannot be read, so whether it names a NAR being removed is unknown: %w", key, err)
			}
			ni, err := nixcache.ParseNarInfo(data, v.storeDir)
			if err != nil {
				// When in doubt, keep: it may name one of them.
				mu.Lock()
				defer mu.Unlock()
				for kh, k := range narOf {
					p.warn("%s is kept: %s cannot be parsed, it may name it (%v)", k, key, err)
					delete(narOf, kh)
				}
				return nil
			}
			nk, ok := ni.NarKey()
			if !ok {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if narOf[keyHash(nk)] == nk {
				p.warn("%s is kept: %s names it too", nk, key)
				delete(narOf, keyHash(nk))
			}
			return nil
		})
	}
	return eg.Wait()
}
