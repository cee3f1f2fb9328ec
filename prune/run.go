package prune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/gctune"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/reports"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// releaseTimeout bounds the release of the lease after the work, which runs
// even when the caller's context has ended.
const releaseTimeout = time.Minute

// saveTimeout bounds the saving of the report after the run, which also
// runs when the caller's context has ended (kiss-lambda stops its prune 30 s
// before the function's deadline).
const saveTimeout = 10 * time.Second

// ErrLease wraps every failure to take the prune lease (another prune held
// it past LockWait: lockproto.IsLocked; the store failed; the context ended).
// Nothing was planned or deleted.
var ErrLease = errors.New("prune lease")

// ErrNotACache: the directory has no nix-cache-info, so it is not a binary
// cache (a mistyped path, a home directory): Run refuses it, deleting and
// writing nothing, unless Options.AllowNoCacheInfo.
var ErrNotACache = errors.New("not a binary cache")

// Options are what one prune keeps, how it locks and what it reports.
type Options struct {
	gc.Options

	// DryRun plans only: no lease is taken, nothing is deleted or written.
	DryRun bool
	// LockTTL and LockWait are the prune lease's TTL (refreshed every
	// TTL/6) and how long to wait for it; 0 takes lockproto's defaults.
	LockTTL, LockWait time.Duration
	// MaxLockTTL bounds LockTTL and how far a writer lease's declared TTL
	// lengthens it (0: lockproto.DefaultMaxTTL; see lockproto.Judging).
	MaxLockTTL time.Duration
	// Owner names the pruner in the lease body, for humans.
	Owner string
	// OnDeletion, if set, sees every deletion of the plan before anything
	// is deleted (kiss prune --list).
	OnDeletion func(gc.Deletion)
	// AllowNoCacheInfo lets Run prune a file:// directory that has no
	// nix-cache-info (see ErrNotACache).
	AllowNoCacheInfo bool
	// NoReport: do not keep the run's report in the cache. Otherwise every
	// run that is not a dry run saves it to .kiss/reports/<time>.json (the
	// newest KeepReports are kept), for kiss report.
	NoReport bool
}

// KeepReports is how many prune reports the cache keeps.
const KeepReports = 1000

// Run prunes st: the prune lease (unless DryRun), the plan, the deletions,
// the release. It always returns a report, with the store requests it cost
// and, on failure, the error's text. The error wraps ErrLease when the lease
// could not be taken, lockproto.ErrLeaseLost when it was lost while working,
// and gc's sentinels.
func Run(ctx context.Context, st storage.Store, o Options) (*gc.Report, error) {
	if err := o.CheckRootMaxAge(); err != nil {
		return &gc.Report{Store: st.URL(), DryRun: o.DryRun, Error: err.Error()}, err
	}
	if err := requireCache(ctx, st, o); err != nil {
		return &gc.Report{Store: st.URL(), DryRun: o.DryRun, Error: err.Error()}, err
	}
	rep, err := underLease(ctx, st, o, func(work context.Context, counted storage.Store) (*gc.Plan, error) {
		opts := o.Options
		opts.DryRun = o.DryRun // a dry run builds no next memo
		plan, err := gc.NewPlan(work, counted, opts)
		if err == nil && o.OnDeletion != nil {
			for d := range plan.Deletions() {
				o.OnDeletion(d)
			}
		}
		return plan, err
	})
	if !o.DryRun && !o.NoReport {
		// An interrupted run (SIGINT, kiss-lambda's stop before its
		// deadline) may have deleted part of its plan: its report is
		// kept too, within saveTimeout of a context of its own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
		saveReport(sctx, st, rep)
		cancel()
	}
	return rep, err
}

// requireCache refuses a local directory that is not a binary cache before
// anything is written to it (not even the lease). Buckets are not checked:
// a bucket filled only through an older gateway may lack nix-cache-info,
// and a mistyped bucket name does not exist at all.
func requireCache(ctx context.Context, st storage.Store, o Options) error {
	if err := roots.CheckDir(ctx, st); err != nil {
		return err
	}
	if o.AllowNoCacheInfo || !st.Capabilities().Local {
		return nil
	}
	_, err := st.Stat(ctx, nixcache.CacheInfoKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: %s has no %s (nothing deleted; --allow-no-cache-info to prune it anyway)", ErrNotACache, st.URL(), nixcache.CacheInfoKey)
	case err != nil:
		return fmt.Errorf("%w: %s: %w", gc.ErrRootsUnavailable, nixcache.CacheInfoKey, err)
	}
	return nil
}

// saveReport keeps rep in the cache; a failure is only a warning in it.
func saveReport(ctx context.Context, st storage.Store, rep *gc.Report) {
	at := rep.Now
	if at.IsZero() { // the run failed before it read the store's clock
		now, err := st.Now(ctx)
		if err != nil {
			rep.Warnings = append(rep.Warnings, "report not saved: store clock: "+err.Error())
			return
		}
		at = now
	}
	if _, err := reports.Save(ctx, st, nixcache.ReportsPrefix, at, rep); err != nil {
		rep.Warnings = append(rep.Warnings, "report not saved: "+err.Error())
		return
	}
	if _, err := reports.Trim(ctx, st, nixcache.ReportsPrefix, KeepReports); err != nil {
		rep.Warnings = append(rep.Warnings, "old reports not trimmed: "+err.Error())
	}
}

// underLease is one run of a plan: the prune lease (unless o.DryRun), the
// plan that makePlan makes under it (with the store requests counted), its
// execution, the release. kiss prune and kiss rm differ only in makePlan.
func underLease(ctx context.Context, st storage.Store, o Options, makePlan func(context.Context, storage.Store) (*gc.Plan, error)) (*gc.Report, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
		o.Logger = log
	}
	counted := storage.NewCounting(st)
	started := time.Now()
	finish := func(rep *gc.Report, err error) (*gc.Report, error) {
		if rep == nil {
			rep = &gc.Report{Store: counted.URL()}
		}
		rep.DryRun = o.DryRun
		rep.Requests = counted.Counts()
		if rep.Elapsed == 0 {
			rep.Elapsed = time.Since(started).Seconds()
		}
		if err != nil {
			rep.Error = err.Error()
		}
		return rep, err
	}

	var lease *lockproto.Lease
	work := ctx
	if !o.DryRun {
		var err error
		// The lease is taken on st itself: its requests are the lock's,
		// not the prune's, and are not counted.
		lease, err = lockproto.AcquirePrune(ctx, st, lockproto.Options{TTL: o.LockTTL, MaxTTL: o.MaxLockTTL, Wait: o.LockWait, Owner: o.Owner, Logger: log})
		if err != nil {
			return finish(nil, fmt.Errorf("%w: %w", ErrLease, err))
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			if err := lease.Release(rctx); err != nil {
				log.Warn("releasing the prune lease", "err", err)
			}
		}()
		work = lease.Context()
	}
	// leaseLost makes a failure that the lost lease caused say so.
	leaseLost := func(err error) error {
		if lease != nil && lease.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("%w: %w", lockproto.ErrLeaseLost, err)
		}
		return err
	}

	plan, err := makePlan(work, counted)
	if err != nil {
		var rep *gc.Report
		if plan != nil { // what a refused plan found (gc.NewPlan)
			rep = plan.Report()
		}
		return finish(rep, leaseLost(err))
	}
	defer plan.Close()
	rep := plan.Report()
	if !o.DryRun {
		rep, err = plan.Execute(work, lease, o.Progress)
		if err != nil {
			return finish(rep, leaseLost(err))
		}
	}
	return finish(rep, nil)
}

// GCPercent is the GOGC a pruning process should run with unless its
// environment says otherwise (kiss prune and kiss-lambda set it, through
// GCPolicy). The plan's large structures hold no pointers, so a collection
// costs little however big they are: collecting at +10% keeps a 10⁸-path
// prune within 4 GiB (docs/benchmarks.md).
const GCPercent = 10

// GCPolicy is GCPercent with a floor under the headroom: while the plan is
// small (tens of MiB at 10⁶ paths) +10% meant a collection every few MiB of
// short-lived garbage, 10–15 % of a cold dry run's time. 8 MiB saved as much
// time as 16 for half the peak RSS (docs/benchmarks.md). Start it with
// gctune.Start.
var GCPolicy = gctune.Policy{Percent: GCPercent, MinHeadroom: 8 << 20, MaxPercent: 100}
