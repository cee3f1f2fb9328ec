package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

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
	return "the young narinfo " + nixcache.NarInfoKey(c.Steps[0].Hash) + " (an upload within the grace period)"
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
	// A root naming a quarantined path keeps what that path references,
	// but the walk cannot see it (a prune refuses the same way): any
	// target may be among it.
	if len(v.quarantined) > 0 && !v.opts.AllowDangling {
		return nil, fmt.Errorf("%w: %s", ErrIntegrity, v.quarantined[0])
	}
	skip := func(id PathID) bool { return isTarget[id] }
	for id := range isTarget {
		c, ok, err := v.ShortestChain(id, skip)
		if err != nil {
			return nil, err
		}
		if ok {
			re := &RootedError{Hash: c.Steps[len(c.Steps)-1].Hash, Chain: c, Root: v.RootName(c)}
			for _, s := range c.Steps {
				re.Path = append(re.Path, s.Hash)
			}
			errs = append(errs, re)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	opts := v.opts
	opts.NoMemo = true
	p := &Plan{st: v.st, opts: opts, log: opts.Logger, now: v.now, tmp: newTempFiles(opts.TempDir)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.report = Report{Store: v.st.URL(), Now: v.now, Grace: Duration(v.grace), Concurrency: v.conc, Phases: map[string]float64{}}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()
	var err error
	if p.delMeta, err = newSpool(p.tmp, "delete-meta"); err != nil {
		return nil, err
	}
	if p.delNAR, err = newSpool(p.tmp, "delete-nar"); err != nil {
		return nil, err
	}
	var dels []objRec

	// Each target's narinfo, read afresh: its NAR and deriver.
	narOf := map[uint64]string{}      // keyHash → key of a target's NAR
	drvOf := map[nixcache.Hash]bool{} // derivations whose logs may go
	var ni nixcache.NarInfo
	for id := range isTarget {
		h, err := v.Hash(id)
		if err != nil {
			return nil, err
		}
		dels = append(dels, objRec{kind: nixcache.KindNarInfo, key: nixcache.NarInfoKey(h), size: -1, mtime: noTime})
		drvOf[h] = true // the target may be a .drv itself
		found, _, err := readReachableInto(ctx, v.st, v.storeDir, h, &ni)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			p.warn("%v: its NAR and log are left for the next prune", err)
			continue
		case !found:
			return nil, fmt.Errorf("%s: %w (it vanished since the listing)", nixcache.NarInfoKey(h), ErrNotInCache)
		}
		if k, ok := ni.NarKey(); ok {
			narOf[keyHash(k)] = k
		}
		if ni.HasDeriver {
			drvOf[ni.Deriver] = true
		}
	}

	// A NAR goes only if no other narinfo names it: the reachable ones are
	// known, the others are read. A log stays if a kept path needs it.
	keepDrv := map[nixcache.Hash]bool{}
	err = v.memo.forEntries(func(k int64, h *nixcache.Hash, _ int64, e *memoEntry) error {
		if isTarget[PathID(v.ids[k])] {
			return nil
		}
		if key, ok := narOf[e.nar]; ok {
			p.warn("%s is kept: %s names it too", key, nixcache.NarInfoKey(*h))
			delete(narOf, e.nar)
		}
		if drvOf[*h] {
			keepDrv[*h] = true
		}
		if e.hasDer {
			d := e.der.h
			if e.der.entry >= 0 {
				var err error
				if d, err = v.Hash(PathID(v.ids[e.der.entry])); err != nil {
					return err
				}
			}
			if drvOf[d] {
				keepDrv[d] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(narOf) > 0 {
		if err := v.dropSharedNARs(ctx, isTarget, narOf, p); err != nil {
			return nil, err
		}
	}

	// The other objects that belong to a target.
	var content []objRec
	err = v.ix.forObjects(func(o *objRec) error {
		switch o.kind {
		case nixcache.KindListing:
			h, err := nixcache.ParseHash(o.key[:nixcache.HashLen])
			if id, ok := v.Lookup(h); err == nil && ok && isTarget[id] {
				dels = append(dels, *o)
			}
		case nixcache.KindNAR:
			if narOf[keyHash(o.key)] == o.key {
				dels = append(dels, *o)
			}
		case nixcache.KindLog:
			if h, err := nixcache.LogDrvHash(o.key); err == nil && drvOf[h] && !keepDrv[h] {
				dels = append(dels, *o)
			}
		case nixcache.KindRealisation, nixcache.KindBuildTrace, nixcache.KindDebugInfo:
			content = append(content, *o)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	drop := make([]bool, len(content))
	err = parallel(ctx, len(content), v.conc, func(ctx context.Context, j int) error {
		o := &content[j]
		data, err := readAll(ctx, v.st, o.key, 1<<20)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // gone, or unreadable: not ours to judge
		}
		if o.kind == nixcache.KindDebugInfo {
			nk, err := nixcache.DebugInfoNarKey(o.key, data)
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
	if err != nil {
		return nil, err
	}
	for j := range content {
		if drop[j] {
			dels = append(dels, content[j])
		}
	}

	// Sizes of what goes (a keys-only listing did not give them).
	err = parallel(ctx, len(dels), v.conc, func(ctx context.Context, j int) error {
		o := &dels[j]
		if known(o.mtime) {
			return nil
		}
		a, err := statKey(ctx, v.st, o.key)
		if err == nil && a.HasAttrs() {
			o.size = a.Size
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var buf []byte
	for i := range dels {
		o := &dels[i]
		buf = appendObjRec(buf[:0], o)
		if err := p.deletions(o.kind).write(buf); err != nil {
			return nil, err
		}
		p.spooled[o.kind].add(o.size)
	}
	p.report.Delete, p.report.DeleteTotal = p.spooled.byName(), p.spooled.sum(nil)
	if err := p.delMeta.finish(); err != nil {
		return nil, err
	}
	if err := p.delNAR.finish(); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// dropSharedNARs reads every narinfo no root reaches (but the targets) and
// removes from narOf the NARs one of them names: deleting those would leave
// that narinfo without its NAR (I2).
func (v *View) dropSharedNARs(ctx context.Context, isTarget map[PathID]bool, narOf map[uint64]string, p *Plan) error {
	var mu sync.Mutex
	return v.ix.forNarInfos(false, func(start int, recs []niRec) error {
		var idx []int
		for k := range recs {
			if id := PathID(start + k); !v.ix.isReach(int(id)) && !isTarget[id] {
				idx = append(idx, k)
			}
		}
		return parallel(ctx, len(idx), v.conc, func(ctx context.Context, j int) error {
			h := recs[idx[j]].h
			key := nixcache.NarInfoKey(h)
			data, err := readAll(ctx, v.st, key, nixcache.MaxNarInfoSize)
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("%s cannot be read, so whether it names a NAR being removed is unknown: %w", key, err)
			}
			ni, err := nixcache.ParseNarInfo(data, v.storeDir)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// When in doubt, keep: it may name one of them.
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
			if narOf[keyHash(nk)] == nk {
				p.warn("%s is kept: %s names it too", nk, key)
				delete(narOf, keyHash(nk))
			}
			return nil
		})
	})
}
