package explain_test

// kiss du on a synthetic cache, warm (closure memo saved), against a warm
// prune's planning time measured in the same run (issue 14: warm du ≤ 2×).
//
//	KISS_BENCH_PATHS=100000 go test -run '^$' -bench DuSynth -benchtime 3x ./explain/

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/explain"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/storage"
)

type refuse struct{}

var errRefused = errors.New("benchmark: no deletion wanted")

func (refuse) Confirm(context.Context) error { return errRefused }

func BenchmarkDuSynthFile(b *testing.B) {
	ctx := context.Background()
	n := 20000
	if s := os.Getenv("KISS_BENCH_PATHS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	dir := filepath.Join(b.TempDir(), "cache")
	c, err := synth.Generate(synth.Config{Paths: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.WriteDir(ctx, dir, 8, nil); err != nil {
		b.Fatal(err)
	}
	st, err := storage.OpenFile(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	opts := gc.Options{Grace: time.Hour}
	// A refused execution deletes nothing but saves the memo: warm from here.
	p, err := gc.NewPlan(ctx, st, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Execute(ctx, refuse{}, nil); !errors.Is(err, errRefused) {
		b.Fatal(err)
	}
	var plan, du time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		pw, err := gc.NewPlan(ctx, st, opts)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		v, err := gc.NewView(ctx, st, opts)
		if err != nil {
			b.Fatal(err)
		}
		u, err := explain.Usage(v)
		if err != nil {
			b.Fatal(err)
		}
		v.Close()
		t2 := time.Now()
		if pw.Report().NarInfoReads != 0 || int64(u.Kept.Paths) != pw.Report().Reachable.Objects {
			b.Fatalf("warm: %d narinfo reads; du kept %d paths, plan %d", pw.Report().NarInfoReads, u.Kept.Paths, pw.Report().Reachable.Objects)
		}
		pw.Close()
		plan += t1.Sub(t0)
		du += t2.Sub(t1)
	}
	b.ReportMetric(plan.Seconds()/float64(b.N), "plan-s")
	b.ReportMetric(du.Seconds()/float64(b.N), "du-s")
	b.ReportMetric(du.Seconds()/plan.Seconds(), "du/plan")
}
