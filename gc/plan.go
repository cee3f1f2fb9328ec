package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// DefaultGrace is the default grace period: objects younger than this on the
// store's clock are never deleted.
const DefaultGrace = 2 * time.Hour

// Options tune a plan. The zero value is safe: default grace, no marker
// expiry, automatic concurrency, the memo on, empty roots refused.
type Options struct {
	// RootSources are extra root sources besides gcroots/: store prefixes
	// ("releases/") or local directories ("/var/lib/roots", "./roots",
	// "file:///x"); see roots.IsLocalSource.
	RootSources []string
	// Grace: nothing younger is deleted, and younger narinfos count as roots.
	// 0 means DefaultGrace; a negative value means no grace at all (tests).
	Grace time.Duration
	// RootMaxAge: markers under gcroots/ older than this stop counting and
	// Execute deletes them. 0 = markers never expire.
	RootMaxAge time.Duration
	// Concurrency of narinfo reads; 0 = 8 on a local store, 64 otherwise.
	Concurrency int
	// AllowEmptyRoots lets a plan with no root delete everything old.
	AllowEmptyRoots bool
	// AllowEmptyMarkers lets a plan proceed when a marker names no store
	// path (it then roots nothing); by default that is ErrEmptyMarker.
	AllowEmptyMarkers bool
	// AllowDangling lets a plan proceed when reachable narinfos name
	// references or NARs that are not in the cache (damage that pruning
	// cannot make worse); by default that is ErrIntegrity.
	AllowDangling bool
	// NoMemo neither reads nor writes the closure memo.
	NoMemo bool
	// BatchSize of DeleteMany calls; 0 = the store's MaxBatchDelete, or 1000.
	BatchSize int
	Logger    *slog.Logger
	Progress  Progress
}

func (o Options) grace() time.Duration {
	switch {
	case o.Grace == 0:
		return DefaultGrace
	case o.Grace < 0:
		return 0
	}
	return o.Grace
}

func (o Options) concurrency(st storage.Store) int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	if st.Capabilities().Local {
		return max(4, min(8, 2*runtime.GOMAXPROCS(0)))
	}
	return 64
}

// Plan is the result of one listing: what is reachable and what would be
// deleted. It deletes nothing until Execute.
type Plan struct {
	st   storage.Store
	opts Options
	log  *slog.Logger
	ix   *index
	g    *graph
	now  time.Time

	delNarInfo []int32 // listing indices
	delObjs    []int32 // non-NAR objects (ls, log, realisations, ..., temp)
	delNAR     []int32
	delMarkers []roots.Marker // expired

	report   Report
	executed bool
	mu       sync.Mutex
}

// Deletion is one object a plan would delete.
type Deletion struct {
	Key  string `json:"key"`
	Kind string `json:"kind"`
	Size int64  `json:"size"`
}

// Report returns the plan's (and after Execute, the run's) report.
func (p *Plan) Report() *Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.report
	return &r
}

// Deletions iterates every object the plan would delete, in execution order
// (metadata, then NARs).
func (p *Plan) Deletions() iter.Seq[Deletion] {
	return func(yield func(Deletion) bool) {
		for _, m := range p.delMarkers {
			if !yield(Deletion{Key: m.Source, Kind: nixcache.KindRoot.String(), Size: m.Size}) {
				return
			}
		}
		for _, i := range p.delNarInfo {
			e := p.ix.narinfos[i]
			if !yield(Deletion{Key: nixcache.NarInfoKey(e.h), Kind: nixcache.KindNarInfo.String(), Size: int64(e.size)}) {
				return
			}
		}
		for _, list := range [][]int32{p.delObjs, p.delNAR} {
			for _, i := range list {
				o := p.ix.objs.at(int(i))
				if !yield(Deletion{Key: p.ix.key(o), Kind: o.kind.String(), Size: o.size}) {
					return
				}
			}
		}
	}
}

// NewPlan lists st once, reads the roots and the reachable narinfos, and
// decides what to delete. It fails closed: see the package errors.
func NewPlan(ctx context.Context, st storage.Store, opts Options) (*Plan, error) {
	start := time.Now()
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Plan{st: st, opts: opts, log: log}
	now, err := st.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: store clock: %w", ErrRootsUnavailable, err)
	}
	p.now = now
	grace := opts.grace()
	cutoff := now.Add(-grace)
	conc := opts.concurrency(st)
	p.report = Report{Store: st.URL(), Now: now, Grace: Duration(grace), RootMaxAge: Duration(opts.RootMaxAge), Concurrency: conc, Phases: map[string]float64{}}
	phase := func(name string, t0 time.Time) { p.report.Phases[name] = time.Since(t0).Seconds() }

	t0 := time.Now()
	storeDir, markers, err := loadMarkers(ctx, st, opts, now, conc)
	if err != nil {
		return nil, err
	}
	var rootPaths []nixcache.Hash
	var empty []string
	for i := range markers {
		m := &markers[i]
		if m.Expired {
			p.delMarkers = append(p.delMarkers, *m)
			p.report.Roots.Expired++
			continue
		}
		p.report.Roots.Markers++
		if m.Problem != "" {
			p.warn("marker %s %s", m.Source, m.Problem)
			empty = append(empty, m.Source)
		}
		rootPaths = append(rootPaths, m.Paths...)
	}
	p.report.Roots.Paths = len(rootPaths)
	p.report.Roots.List = markers
	phase(PhaseRoots, t0)
	if len(empty) > 0 && !opts.AllowEmptyMarkers {
		return nil, fmt.Errorf("%w: %s; nothing deleted", ErrEmptyMarker, strings.Join(firstN(empty, 10), ", "))
	}
	if len(rootPaths) == 0 && !opts.AllowEmptyRoots {
		return nil, fmt.Errorf("%w (%d markers, %d expired)", ErrEmptyRoots, p.report.Roots.Markers, p.report.Roots.Expired)
	}

	t0 = time.Now()
	var m *memo
	if !opts.NoMemo {
		m, err = loadMemo(ctx, st)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p.warn("closure memo ignored, rebuilding it: %v", err)
			m = nil
		}
		p.report.Memo.Loaded = m != nil
	}
	// Newborns live: young narinfos are roots, so an upload in flight keeps
	// its whole closure even when its writer skipped the lock.
	ex, err := explore(ctx, st, rootPaths, m, storeDir, conc, true, cutoff, opts.Progress)
	if err != nil {
		return nil, err
	}
	m = nil
	ix, g := ex.ix, ex.g
	p.ix, p.g = ix, g
	phase(PhaseWalk, t0)
	p.report.Phases[PhaseList] = ex.listSeconds
	p.report.Listed = map[string]Count{}
	for k, c := range ix.counts {
		if c.Objects > 0 {
			p.report.Listed[nixcache.Kind(k).String()] = c
		}
	}
	p.report.ListedBytesPartial = ix.partial
	p.report.Roots.Young = ex.young
	p.report.Roots.Missing = len(g.missingRoots)
	for i, h := range g.missingRoots {
		if i < 10 {
			p.warn("%s names %s, which is not in the cache (it roots nothing)", markersNaming(markers, h), h)
		}
	}
	p.report.Reachable = Count{Objects: int64(g.reachable), Bytes: int64(g.reachBytes)}
	p.report.Memo.Hits, p.report.NarInfoReads = g.memoHits, g.reads
	p.report.DanglingRefs, p.report.MissingNARs = g.danglingRefs, g.missingNARs
	for _, s := range g.firstProblems {
		p.warn("%s", s)
	}
	if (g.danglingRefs > 0 || g.missingNARs > 0) && !opts.AllowDangling {
		return nil, fmt.Errorf("%w: %d references and %d NARs of reachable paths are missing (first: %s); nothing deleted (--allow-dangling to prune anyway)",
			ErrIntegrity, g.danglingRefs, g.missingNARs, first(g.firstProblems))
	}

	t0 = time.Now()
	if err := p.decide(ctx, cutoff, storeDir, conc); err != nil {
		return nil, err
	}
	phase(PhaseMeta, t0)
	p.report.Elapsed = time.Since(start).Seconds()
	return p, nil
}

// loadMarkers reads the roots (roots.Load) for a plan or a root listing.
func loadMarkers(ctx context.Context, st storage.Store, opts Options, now time.Time, conc int) (string, []roots.Marker, error) {
	return roots.Load(ctx, st, roots.LoadOptions{Sources: opts.RootSources, MaxAge: opts.RootMaxAge, Now: now, Concurrency: conc, Progress: opts.Progress})
}

// firstN is s, cut to n entries with a count of the rest.
func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}

func first(s []string) string {
	if len(s) == 0 {
		return "?"
	}
	return s[0]
}

func (p *Plan) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.log.Warn(msg)
	if len(p.report.Warnings) < 100 {
		p.report.Warnings = append(p.report.Warnings, msg)
	}
}

// decide sorts every listed object into keep or delete. Objects a
// keys-only listing left without attributes are stat'ed only if they may be
// deleted: a kept object's age does not matter.
func (p *Plan) decide(ctx context.Context, cutoff time.Time, storeDir string, conc int) error {
	ix, g := p.ix, p.g
	// NAR keys kept: those of reachable narinfos, and young NARs (so a
	// debuginfo pointing into an upload in flight is kept too).
	keepNAR := make([]uint64, 0, g.reachable)
	// Derivations whose logs are kept: reachable paths (checked in the
	// listing) and the derivers of reachable paths (collected only if the
	// cache has logs at all).
	var keepDrv []nixcache.Hash
	haveLogs := ix.counts[nixcache.KindLog].Objects > 0
	for i := range ix.narinfos {
		if !g.isReach(i) {
			continue
		}
		ni := g.info[i]
		if ni.nar != 0 {
			keepNAR = append(keepNAR, ni.nar)
		}
		if haveLogs && ni.deriver != noRef {
			keepDrv = append(keepDrv, g.hashOf(ni.deriver))
		}
	}
	slices.Sort(keepNAR)
	slices.SortFunc(keepDrv, func(a, b nixcache.Hash) int { return bytes.Compare(a[:], b[:]) })
	reachable := func(h nixcache.Hash) bool {
		i := ix.find(h)
		return i >= 0 && g.isReach(i)
	}
	drvKept := func(h nixcache.Hash) bool {
		_, ok := slices.BinarySearchFunc(keepDrv, h, func(a, b nixcache.Hash) int { return bytes.Compare(a[:], b[:]) })
		return ok || reachable(h)
	}
	// dropUnlessYoung says whether a listed object goes if it is old enough;
	// realisations, build traces and debuginfo are decided by their content.
	dropUnlessYoung := func(o *objEntry) bool {
		switch o.kind {
		case nixcache.KindListing:
			h, _ := nixcache.ParseHash(ix.key(o)[:nixcache.HashLen])
			return !reachable(h)
		case nixcache.KindNAR:
			return !hasU64(keepNAR, o.kh)
		case nixcache.KindLog:
			h, err := nixcache.LogDrvHash(ix.key(o))
			return err == nil && !drvKept(h)
		case nixcache.KindTemp, nixcache.KindRealisation, nixcache.KindBuildTrace, nixcache.KindDebugInfo:
			return true
		}
		return false
	}
	if ix.partial {
		var narIdx, objIdx []int32
		for i := range ix.narinfos {
			if ix.narinfos[i].mtime == noTime && !g.isReach(i) {
				narIdx = append(narIdx, int32(i))
			}
		}
		for i := range ix.objs.len() {
			if o := ix.objs.at(i); o.mtime == noTime && dropUnlessYoung(o) {
				objIdx = append(objIdx, int32(i))
			}
		}
		if err := fillAttrs(ctx, p.st, ix, narIdx, objIdx, conc, p.opts.Progress); err != nil {
			return err
		}
	}
	var youngNAR bool
	for i := range ix.objs.len() {
		o := ix.objs.at(i)
		if o.kind == nixcache.KindNAR && young(o.mtime, cutoff) {
			keepNAR = append(keepNAR, o.kh)
			youngNAR = true
		}
	}
	if youngNAR {
		slices.Sort(keepNAR)
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
	for i, e := range ix.narinfos {
		if g.isReach(i) || young(e.mtime, cutoff) || !known(e.mtime) {
			count(keep, nixcache.KindNarInfo, int64(e.size))
			continue
		}
		p.delNarInfo = append(p.delNarInfo, int32(i))
		count(del, nixcache.KindNarInfo, int64(e.size))
	}

	// Objects whose fate depends on their content: read them in parallel.
	var metaIdx []int32
	for i := range ix.objs.len() {
		o := ix.objs.at(i)
		if young(o.mtime, cutoff) || !known(o.mtime) {
			count(keep, o.kind, o.size)
			continue
		}
		switch o.kind {
		case nixcache.KindRealisation, nixcache.KindBuildTrace, nixcache.KindDebugInfo:
			metaIdx = append(metaIdx, int32(i))
			continue
		}
		if !dropUnlessYoung(o) {
			count(keep, o.kind, o.size)
			continue
		}
		if o.kind == nixcache.KindNAR {
			p.delNAR = append(p.delNAR, int32(i))
		} else {
			p.delObjs = append(p.delObjs, int32(i))
		}
		count(del, o.kind, o.size)
	}

	opts := p.opts
	opts.Progress.Start(PhaseMeta, int64(len(metaIdx)), -1)
	defer opts.Progress.Done(PhaseMeta)
	drops := make([]bool, len(metaIdx))
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(conc)
	for j, i := range metaIdx {
		o := ix.objs.at(int(i))
		key := ix.key(o)
		eg.Go(func() error {
			defer opts.Progress.Advance(PhaseMeta, 1, o.size)
			data, err := readAll(ectx, p.st, key, 1<<20)
			if err != nil {
				if ectx.Err() != nil {
					return ectx.Err()
				}
				if !errors.Is(err, storage.ErrNotFound) {
					mu.Lock()
					p.warn("%s kept: cannot read it: %v", key, err)
					mu.Unlock()
				}
				return nil
			}
			var keepIt bool
			if o.kind == nixcache.KindDebugInfo {
				nk, err := nixcache.DebugInfoNarKey(key, data)
				keepIt = err != nil || hasU64(keepNAR, keyHash(nk))
			} else {
				h, err := nixcache.RealisationOutPath(data, storeDir)
				keepIt = err != nil || reachable(h)
			}
			drops[j] = !keepIt
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	for j, i := range metaIdx {
		o := ix.objs.at(int(i))
		if drops[j] {
			p.delObjs = append(p.delObjs, i)
			count(del, o.kind, o.size)
		} else {
			count(keep, o.kind, o.size)
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
	return nil
}

// markersNaming lists the live markers that name h, so a warning about an
// absent root says which marker to fix.
func markersNaming(markers []roots.Marker, h nixcache.Hash) string {
	var srcs []string
	for _, m := range markers {
		if !m.Expired && slices.Contains(m.Paths, h) {
			srcs = append(srcs, m.Source)
		}
	}
	if len(srcs) == 0 {
		return "a root source"
	}
	return "marker " + strings.Join(srcs, ", ")
}
