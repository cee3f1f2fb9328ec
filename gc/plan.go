package gc

import (
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

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
	// DryRun: the plan is only looked at (Deletions, Report), never
	// executed, so no next memo is built; Execute refuses (ErrDryRun).
	DryRun bool
	// BatchSize of DeleteMany calls (one fence confirmation each); 0 = the
	// store's MaxBatchDelete × DeleteParallel, or 4096.
	BatchSize int
	// ListPagesInFlight bounds the page requests of a parallel listing
	// (S3); 0 = storage.DefaultPagesInFlight.
	ListPagesInFlight int
	// Snapshot, if set, is an earlier listing of the store (an S3
	// Inventory report) used for everything below a '/' (nar/, log/,
	// debuginfo/, …); the top level (narinfos, .ls) is still listed live.
	// An object the snapshot lists is stat'ed right before it is deleted
	// and kept if it is gone or younger than the grace period now (it may
	// have been deleted and uploaded again since); an object created since
	// is not in the snapshot and so never deleted. See Snapshot.
	Snapshot Snapshot
	// TempDir holds the plan's temporary files (the listing, the walk, the
	// next memo, the deletions: about 100 bytes per object, unlinked as soon
	// as they are created); "" = os.TempDir().
	TempDir  string
	Logger   *slog.Logger
	Progress Progress
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

// CheckRootMaxAge refuses a RootMaxAge shorter than the grace period: a
// marker would stop counting sooner than an upload no marker names is
// pruned, which no policy wants and a typo (30m for 30d) gives, expiring
// the whole root registry in one run. 0 (no expiry) is fine.
func (o Options) CheckRootMaxAge() error {
	if o.RootMaxAge > 0 && o.RootMaxAge < o.grace() {
		return fmt.Errorf("%w: %v < %v (did you mean days?)", ErrRootMaxAge, o.RootMaxAge, o.grace())
	}
	return nil
}

// MaxConcurrency bounds Options.Concurrency: each unit is a goroutine of
// the walk, so 10⁸ spent minutes starting them, deaf to cancellation. kiss
// prune and kiss-lambda refuse more; gc takes at most this many.
const MaxConcurrency = 1024

func (o Options) concurrency(st storage.Store) int {
	if o.Concurrency > 0 {
		return min(o.Concurrency, MaxConcurrency)
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
	now  time.Time
	// cutoff: objects younger than this (store clock) are never deleted.
	cutoff time.Time
	tmp    *tempFiles
	// memo is the reachable graph this plan found: Execute saves it.
	memo *memoFile

	// delMeta (narinfo, ls, log, realisations, …, temp) and delNAR hold
	// the deletions, in the index's object record format.
	delMeta, delNAR *spool
	// spooled counts, by kind, what delMeta and delNAR hold: each delete
	// phase's progress total, without a pass over its file.
	spooled    kindCounts
	delMarkers []roots.Marker // expired

	report   Report
	executed bool
	refused  error // why NewPlan stopped: only Report is usable
	mu       sync.Mutex
}

// inNARPhase says which delete phase an object goes in: NARs last, after
// every metadata object (I2: no narinfo left names a deleted NAR).
func inNARPhase(k nixcache.Kind) bool { return k == nixcache.KindNAR }

// deletions is the deletion list an object of kind k goes on.
func (p *Plan) deletions(k nixcache.Kind) *spool {
	if inNARPhase(k) {
		return p.delNAR
	}
	return p.delMeta
}

// phaseTotal is what the delete phase of NARs (nar) or of metadata holds.
func (p *Plan) phaseTotal(nar bool) Count {
	return p.spooled.sum(func(k nixcache.Kind) bool { return inNARPhase(k) == nar })
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
	if r.Snapshot != nil {
		s := *r.Snapshot
		r.Snapshot = &s
	}
	return &r
}

// Deletions iterates every object the plan would delete, in execution order
// (metadata, then NARs). It reads them back from the plan's files: nothing
// is held in memory per deletion.
func (p *Plan) Deletions() iter.Seq[Deletion] {
	return func(yield func(Deletion) bool) {
		for _, m := range p.delMarkers {
			if !yield(Deletion{Key: m.Source, Kind: nixcache.KindRoot.String(), Size: m.Size}) {
				return
			}
		}
		for _, sp := range []*spool{p.delMeta, p.delNAR} {
			if sp == nil {
				continue
			}
			r := sp.reader()
			head := make([]byte, objRecHead)
			var o objRec
			for {
				if err := readObjRec(r, head, &o); err != nil {
					if err != io.EOF {
						p.mu.Lock()
						p.warn("reading the deletion list: %v", err)
						p.mu.Unlock()
					}
					break
				}
				if !yield(Deletion{Key: o.key, Kind: o.kind.String(), Size: o.size}) {
					return
				}
			}
		}
	}
}

// Close frees the plan's temporary files. A plan is unusable afterwards.
func (p *Plan) Close() {
	p.memo.close()
	p.tmp.closeAll()
}

// NewPlan lists st once, reads the roots and the reachable narinfos, and
// decides what to delete. It fails closed: see the package errors. With an
// error it still returns the plan, closed, for its Report: what the run
// found before it stopped (the missing NARs and dangling references of a
// refusal, the roots, the warnings). Only Report may be called on it.
func NewPlan(ctx context.Context, st storage.Store, opts Options) (_ *Plan, err error) {
	start := time.Now()
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Plan{st: st, opts: opts, log: log}
	defer func() {
		if err != nil {
			p.refused = err
			p.Close()
		}
	}()
	now, err := st.Now(ctx)
	if err != nil {
		return p, fmt.Errorf("%w: store clock: %w", ErrRootsUnavailable, err)
	}
	p.now = now
	grace := opts.grace()
	cutoff := now.Add(-grace)
	p.cutoff = cutoff
	conc := opts.concurrency(st)
	p.report = Report{Store: st.URL(), Now: now, Grace: Duration(grace), RootMaxAge: Duration(opts.RootMaxAge), Concurrency: conc, Phases: map[string]float64{}}
	if opts.Snapshot != nil {
		p.report.Snapshot = &SnapshotReport{Taken: opts.Snapshot.Taken(), Age: Duration(now.Sub(opts.Snapshot.Taken()).Truncate(time.Second))}
	}

	t0 := time.Now()
	storeDir, markers, err := loadMarkers(ctx, st, opts, now, conc)
	if err != nil {
		return p, err
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
	p.phaseDone(PhaseRoots, t0)
	if len(empty) > 0 && !opts.AllowEmptyMarkers {
		return p, fmt.Errorf("%w: %s; nothing deleted", ErrEmptyMarker, strings.Join(firstN(empty, 10), ", "))
	}
	if len(rootPaths) == 0 && !opts.AllowEmptyRoots {
		return p, fmt.Errorf("%w (%d markers, %d expired)", ErrEmptyRoots, p.report.Roots.Markers, p.report.Roots.Expired)
	}

	t0 = time.Now()
	p.tmp = newTempFiles(opts.TempDir)
	var m *memoFile
	if !opts.NoMemo {
		m, err = loadMemo(ctx, st, p.tmp)
		if err != nil {
			if ctx.Err() != nil {
				return p, ctx.Err()
			}
			p.warn("closure memo ignored, rebuilding it: %v", err)
			m = nil
		}
	}
	// Newborns live: young narinfos are roots, so an upload in flight keeps
	// its whole closure even when its writer skipped the lock.
	ex, err := explore(ctx, exploreConfig{
		store: st, storeDir: storeDir, conc: conc, roots: rootPaths, memo: m,
		youngRoots: true, cutoff: cutoff, prog: opts.Progress, tmp: p.tmp,
		pagesInFlight: opts.ListPagesInFlight, snapshot: opts.Snapshot, warn: p.warn,
		noMemo: opts.NoMemo || opts.DryRun,
	})
	if err != nil {
		return p, err
	}
	ix := ex.ix
	p.memo = ex.memo
	p.report.Memo.Loaded = ex.memoLoaded
	p.phaseDone(PhaseWalk, t0)
	p.report.Phases[PhaseList] = ex.listSeconds
	p.report.Listed = map[string]Count{}
	for k, c := range ix.counts {
		if c.Objects > 0 {
			p.report.Listed[nixcache.Kind(k).String()] = c
		}
	}
	p.report.ListedBytesPartial = ix.partial
	p.report.Roots.Young = ex.young
	p.report.Roots.Missing = len(ex.missingRoots)
	for i, h := range ex.missingRoots {
		if i < 10 {
			p.warn("%s names %s, which is not in the cache (it roots nothing)", markersNaming(markers, h), h)
		}
	}
	p.report.Reachable.Objects = ex.reachable
	p.report.Memo.Hits, p.report.NarInfoReads = ex.memoHits, ex.reads

	t0 = time.Now()
	d, err := p.decide(ctx, ix, ex, cutoff, storeDir, conc)
	ix.close()
	if err != nil {
		return p, err
	}
	p.phaseDone(PhaseDecide, t0)
	p.report.Reachable.Bytes = int64(d.reachBytes)
	p.report.DanglingRefs, p.report.MissingNARs = ex.danglingRefs, d.missingNARs
	problems := append(ex.firstProblems, d.firstProblems...)
	for _, s := range problems {
		p.warn("%s", s)
	}
	if (ex.danglingRefs > 0 || d.missingNARs > 0) && !opts.AllowDangling {
		return p, fmt.Errorf("%w: %d references and %d NARs of reachable paths are missing (first: %s); nothing deleted (--allow-dangling to prune anyway)",
			ErrIntegrity, ex.danglingRefs, d.missingNARs, first(problems))
	}
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
