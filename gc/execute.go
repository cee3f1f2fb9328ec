package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// Execute deletes what the plan found, in two phases: metadata (expired
// markers, narinfos, .ls, logs, realisations, build traces, debuginfo, stale
// temp files), then NARs, so a narinfo never outlives its NAR (I2). Before
// every DeleteMany batch it calls fence.Confirm; if that fails, nothing more
// is deleted and the error wraps ErrFence and the fence's own error. If a
// metadata batch fails, no NAR is deleted. On success (or after deleting
// part) it saves the closure memo unless Options.NoMemo.
func (p *Plan) Execute(ctx context.Context, fence Fence, prog Progress) (*Report, error) {
	if fence == nil {
		return p.Report(), ErrNoFence
	}
	if p.opts.DryRun {
		return p.Report(), ErrDryRun
	}
	if p.refused != nil {
		return p.Report(), fmt.Errorf("gc: executing a plan that failed: %w", p.refused)
	}
	p.mu.Lock()
	if p.executed {
		p.mu.Unlock()
		return p.Report(), ErrExecuted
	}
	p.executed = true
	p.mu.Unlock()
	if prog == nil {
		prog = NoProgress{}
	}
	start := time.Now()
	err := p.execute(ctx, fence, prog)
	if !p.opts.NoMemo && p.memo != nil && ctx.Err() == nil {
		t0 := time.Now()
		prog.Start(PhaseMemo, -1, -1)
		n, merr := saveMemo(ctx, p.st, p.memo)
		prog.Done(PhaseMemo)
		p.mu.Lock()
		if merr != nil {
			p.warn("cannot save the closure memo %s: %v", MemoKey, merr)
		} else {
			p.report.Memo.Saved, p.report.Memo.Bytes = true, n
		}
		p.report.Phases[PhaseMemo] = time.Since(t0).Seconds()
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.report.Elapsed += time.Since(start).Seconds()
	if err != nil {
		p.report.Error = err.Error()
	}
	p.mu.Unlock()
	return p.Report(), err
}

func (p *Plan) batchSize() int {
	if p.opts.BatchSize > 0 {
		return p.opts.BatchSize
	}
	// One fence confirmation covers the requests a DeleteMany sends at
	// once (S3: 4 DeleteObjects of 1000 keys in flight): 10⁸ deletions are
	// 2.5·10⁴ round trips, not 10⁵.
	if c := p.st.Capabilities(); c.MaxBatchDelete > 0 {
		return c.MaxBatchDelete * max(1, c.DeleteParallel)
	}
	// A store that deletes key by key (file://: an unlinkat each, about
	// 10 µs) confirms the fence every 4096: a confirmation (an fsynced
	// replace of the lease, about 5 ms) then costs about 1 µs per key.
	return 4096
}

func (p *Plan) execute(ctx context.Context, fence Fence, prog Progress) error {
	t0 := time.Now()
	if err := p.deleteMarkers(ctx, fence); err != nil {
		return err
	}
	if err := p.deletePhase(ctx, PhaseDelMeta, p.delMeta, p.phaseTotal(false), fence, prog); err != nil {
		return err
	}
	p.phaseDone(PhaseDelMeta, t0)
	t0 = time.Now()
	if err := p.deletePhase(ctx, PhaseDelNAR, p.delNAR, p.phaseTotal(true), fence, prog); err != nil {
		return err
	}
	p.phaseDone(PhaseDelNAR, t0)
	return nil
}

// deleteMarkers deletes expired markers one by one, each only if it is
// still the version that was listed (a marker rewritten since is fresh).
func (p *Plan) deleteMarkers(ctx context.Context, fence Fence) error {
	for i, m := range p.delMarkers {
		if i%100 == 0 {
			if err := fence.Confirm(ctx); err != nil {
				return fmt.Errorf("%w: %w", ErrFence, err)
			}
		}
		err := roots.Expire(ctx, p.st, m)
		switch {
		case errors.Is(err, storage.ErrPreconditionFailed), errors.Is(err, storage.ErrNotFound):
			p.mu.Lock()
			p.warn("expired marker %s changed or vanished since the listing; kept", m.Source)
			p.mu.Unlock()
		case err != nil:
			p.recheck(ctx, []string{m.Source}, []int64{m.Size}, err)
			return fmt.Errorf("deleting expired marker %s: %w", m.Source, err)
		default:
			p.mu.Lock()
			p.report.Deleted.Objects++
			p.report.Deleted.Bytes += m.Size
			p.mu.Unlock()
		}
	}
	return nil
}

func (p *Plan) phaseDone(phase string, t0 time.Time) {
	p.mu.Lock()
	p.report.Phases[phase] = time.Since(t0).Seconds()
	p.mu.Unlock()
}

// deletePhase deletes the objects listed in sp (total of them), in
// batches, confirming the fence before each.
func (p *Plan) deletePhase(ctx context.Context, phase string, sp *spool, total Count, fence Fence, prog Progress) error {
	prog.Start(phase, total.Objects, total.Bytes)
	defer prog.Done(phase)
	head := make([]byte, objRecHead)
	var o objRec
	bs := p.batchSize()
	keys := make([]string, 0, bs)
	sizes := make([]int64, 0, bs)
	snaps := make([]bool, 0, bs)
	var bytes int64
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		if keys, sizes, bytes, err = p.checkSnapshot(ctx, keys, sizes, snaps); err != nil {
			return err
		}
		if len(keys) == 0 {
			keys, sizes, snaps, bytes = keys[:0], sizes[:0], snaps[:0], 0
			return nil
		}
		// Fencing: prove the lease is still ours right before deleting.
		if err := fence.Confirm(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrFence, err)
		}
		if err := p.st.DeleteMany(ctx, keys); err != nil {
			gone, goneBytes := p.recheck(ctx, keys, sizes, err)
			prog.Advance(phase, gone, goneBytes)
			return fmt.Errorf("%s: deleting a batch of %d (first %s): %w", phase, len(keys), keys[0], err)
		}
		p.mu.Lock()
		p.report.Batches++
		p.report.Deleted.Objects += int64(len(keys))
		p.report.Deleted.Bytes += bytes
		p.mu.Unlock()
		prog.Advance(phase, int64(len(keys)), bytes)
		keys, sizes, snaps, bytes = keys[:0], sizes[:0], snaps[:0], 0
		return nil
	}
	r := sp.reader()
	for {
		err := readObjRec(r, head, &o)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: reading the deletion list: %w", phase, err)
		}
		keys = append(keys, o.key)
		sizes = append(sizes, o.size)
		snaps = append(snaps, o.snap)
		bytes += o.size
		if len(keys) == bs {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// recheckTimeout bounds the re-check of a failed delete batch.
const recheckTimeout = time.Minute

// recheck finds out what a failed delete did. A failed batch may still
// have landed, wholly or in part (S3 applied a DeleteObjects whose answer
// was lost; a file:// batch stopped half way), and a report that counted
// none of it would under-count silently. So every key of the batch is
// stat'ed: what is gone counts as deleted (only the pruner, holding the
// exclusive lease, deletes cache objects), what is there was not deleted,
// and what cannot be stat'ed counts as uncertain, loudly. The stats are
// reads, so they run even after the lease was lost or the run interrupted,
// on a context of their own. Returns what was found deleted.
func (p *Plan) recheck(ctx context.Context, keys []string, sizes []int64, cause error) (gone, goneBytes int64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recheckTimeout)
	defer cancel()
	var (
		mu               sync.Mutex
		present, unknown int64
		unknownBytes     int64
		g                errgroup.Group
	)
	g.SetLimit(16)
	for i, k := range keys {
		g.Go(func() error {
			_, err := p.st.Stat(rctx, k)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, storage.ErrNotFound):
				gone++
				goneBytes += max(sizes[i], 0)
			case err == nil:
				present++
			default:
				unknown++
				unknownBytes += max(sizes[i], 0)
			}
			return nil
		})
	}
	_ = g.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.report.Deleted.Objects += gone
	p.report.Deleted.Bytes += goneBytes
	p.report.DeletedUncertain.Objects += unknown
	p.report.DeletedUncertain.Bytes += unknownBytes
	p.warn("a delete of %d objects (first %s) failed (%v); re-checked: %d gone (counted as deleted), %d still present, %d could not be checked (counted as uncertain)",
		len(keys), keys[0], cause, gone, present, unknown)
	return gone, goneBytes
}

// checkSnapshot stats, right before their delete, the keys of a batch whose
// attributes came from a snapshot (an S3 Inventory report, hours old): one
// that is gone is left out, and so is one that is younger than the grace
// period now — it was deleted and written again since the snapshot (an
// upload in flight: I3). The rest of the batch is unchanged. The stats run
// conc at a time; a stat that fails stops the run (nothing of the batch is
// deleted).
func (p *Plan) checkSnapshot(ctx context.Context, keys []string, sizes []int64, snaps []bool) ([]string, []int64, int64, error) {
	var idx []int
	for i, s := range snaps {
		if s {
			idx = append(idx, i)
		}
	}
	drop := make([]bool, len(keys))
	if len(idx) > 0 {
		var recent, vanished atomic.Int64
		err := parallel(ctx, len(idx), p.opts.concurrency(p.st), func(ctx context.Context, j int) error {
			i := idx[j]
			o, err := p.st.Stat(ctx, keys[i])
			switch {
			case errors.Is(err, storage.ErrNotFound):
				drop[i] = true
				vanished.Add(1)
			case err != nil:
				return fmt.Errorf("checking %s against the store before deleting it: %w", keys[i], err)
			case o.ModTime.After(p.cutoff):
				drop[i] = true
				recent.Add(1)
			}
			return nil
		})
		p.mu.Lock()
		if r := p.report.Snapshot; r != nil {
			r.Checked += int64(len(idx))
			r.Recent += recent.Load()
			r.Vanished += vanished.Load()
		}
		p.mu.Unlock()
		if err != nil {
			return nil, nil, 0, err
		}
	}
	var bytes int64
	k, sz := keys[:0], sizes[:0]
	for i := range keys {
		if !drop[i] {
			k, sz = append(k, keys[i]), append(sz, sizes[i])
			bytes += sizes[i]
		}
	}
	return k, sz, bytes, nil
}
