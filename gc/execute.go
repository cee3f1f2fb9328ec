package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
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
	if !p.opts.NoMemo && ctx.Err() == nil {
		t0 := time.Now()
		prog.Start(PhaseMemo, -1, -1)
		n, merr := saveMemo(ctx, p.st, p.g)
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
	if n := p.st.Capabilities().MaxBatchDelete; n > 0 {
		return n
	}
	return 1000
}

func (p *Plan) execute(ctx context.Context, fence Fence, prog Progress) error {
	var meta, nars []Deletion
	for d := range p.Deletions() {
		if d.Kind == nixcache.KindNAR.String() {
			nars = append(nars, d)
		} else {
			meta = append(meta, d)
		}
	}
	t0 := time.Now()
	if err := p.deletePhase(ctx, PhaseDelMeta, meta, fence, prog); err != nil {
		return err
	}
	p.report.Phases[PhaseDelMeta] = time.Since(t0).Seconds()
	t0 = time.Now()
	if err := p.deletePhase(ctx, PhaseDelNAR, nars, fence, prog); err != nil {
		return err
	}
	p.report.Phases[PhaseDelNAR] = time.Since(t0).Seconds()
	return nil
}

func (p *Plan) deletePhase(ctx context.Context, phase string, dels []Deletion, fence Fence, prog Progress) error {
	var total int64
	for _, d := range dels {
		total += d.Size
	}
	prog.Start(phase, int64(len(dels)), total)
	defer prog.Done(phase)
	bs := p.batchSize()
	keys := make([]string, 0, bs)
	for len(dels) > 0 {
		n := min(bs, len(dels))
		batch := dels[:n]
		dels = dels[n:]
		if err := ctx.Err(); err != nil {
			return err
		}
		// Fencing: prove the lease is still ours right before deleting.
		if err := fence.Confirm(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrFence, err)
		}
		keys = keys[:0]
		var bytes int64
		for _, d := range batch {
			keys = append(keys, d.Key)
			bytes += d.Size
		}
		if err := p.st.DeleteMany(ctx, keys); err != nil {
			return fmt.Errorf("%s: deleting a batch of %d (first %s): %w", phase, len(keys), keys[0], err)
		}
		p.mu.Lock()
		p.report.Batches++
		p.report.Deleted.Objects += int64(len(keys))
		p.report.Deleted.Bytes += bytes
		p.mu.Unlock()
		prog.Advance(phase, int64(len(keys)), bytes)
	}
	return nil
}
