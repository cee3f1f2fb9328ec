package gc_test

// Prune benchmarks on synthetic caches (internal/synth). They compare the
// pruner with a baseline measured in the same run: a plain parallel read of
// every reachable narinfo, keys known in advance, at the pruner's own
// concurrency. Targets (issue 4): cold ≤ 1.5× baseline, warm ≤ 0.3×.
//
//	go test -run '^$' -bench PruneSynth ./gc/                 # 20k paths
//	KISS_BENCH_PATHS=100000 go test -run '^$' -bench PruneSynthFile ./gc/
//
// The end-to-end version with the real binary, RSS and a 1M run is
// e2e/bench/prune.sh.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

func synthPaths(b *testing.B, def int) int {
	if s := os.Getenv("KISS_BENCH_PATHS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("KISS_BENCH_PATHS=%q: %v", s, err)
		}
		return n
	}
	return def
}

// synthFence confirms always: benchmarks hold no lease.
type synthFence struct{}

func (synthFence) Confirm(context.Context) error { return nil }

// synthRefuse makes Execute delete nothing; it still saves the memo, which is
// how a benchmark gets a warm memo without changing the cache.
type synthRefuse struct{}

var errSynthRefused = errors.New("benchmark: no deletion wanted")

func (synthRefuse) Confirm(context.Context) error { return errSynthRefused }

func synthReachable(c *synth.Cache) []string {
	var keys []string
	for i := range c.Paths {
		if c.Paths[i].Reachable {
			keys = append(keys, c.NarinfoKey(i))
		}
	}
	return keys
}

// checkPlan fails the benchmark if the plan disagrees with the generator on
// what is reachable: a fast wrong pruner is not a result.
func synthCheckPlan(b *testing.B, r *gc.Report, c *synth.Cache, young bool) {
	b.Helper()
	want := int64(len(synthReachable(c)))
	got := r.Reachable.Objects
	if young {
		// Young narinfos are roots: the newborns and their closures.
		for i := range c.Paths {
			if c.Paths[i].Newborn {
				want++
			}
		}
	}
	if got != want {
		b.Fatalf("pruner found %d reachable narinfos, the generator %d", got, want)
	}
}

func synthWriteMemo(b *testing.B, ctx context.Context, st storage.Store, opts gc.Options) {
	b.Helper()
	p, err := gc.NewPlan(ctx, st, opts)
	if err != nil {
		b.Fatal(err)
	}
	r, err := p.Execute(ctx, synthRefuse{}, nil)
	if !errors.Is(err, errSynthRefused) || r.Deleted.Objects != 0 || !r.Memo.Saved {
		b.Fatalf("memo run: err %v, deleted %d, memo saved %v", err, r.Deleted.Objects, r.Memo.Saved)
	}
}

// BenchmarkPruneSynthFile: file://, dry-run plans, cold (no memo) and warm.
func BenchmarkPruneSynthFile(b *testing.B) {
	ctx := context.Background()
	n := synthPaths(b, 20000)
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
	keys := synthReachable(c)
	opts := gc.Options{Grace: time.Hour}
	p, err := gc.NewPlan(ctx, st, gc.Options{Grace: time.Hour, NoMemo: true})
	if err != nil {
		b.Fatal(err)
	}
	synthCheckPlan(b, p.Report(), c, true)
	conc := p.Report().Concurrency
	synthWriteMemo(b, ctx, st, opts)

	var base, cold, warm time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := synth.ReadAll(ctx, st, keys, conc); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		pc, err := gc.NewPlan(ctx, st, gc.Options{Grace: time.Hour, NoMemo: true})
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		pw, err := gc.NewPlan(ctx, st, opts)
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if pw.Report().NarInfoReads != 0 || pc.Report().NarInfoReads < int64(len(keys)) {
			b.Fatalf("narinfo reads: cold %d, warm %d (reachable %d)", pc.Report().NarInfoReads, pw.Report().NarInfoReads, len(keys))
		}
		base += t1.Sub(t0)
		cold += t2.Sub(t1)
		warm += t3.Sub(t2)
	}
	b.ReportMetric(base.Seconds()/float64(b.N), "baseline-s")
	b.ReportMetric(cold.Seconds()/base.Seconds(), "cold/baseline")
	b.ReportMetric(warm.Seconds()/base.Seconds(), "warm/baseline")
}

// BenchmarkPruneSynthS3: versitygw, grace 0 (the store sets mtimes), requests
// by type for a cold plan, a warm plan and a real prune.
func BenchmarkPruneSynthS3(b *testing.B) {
	ctx := context.Background()
	n := synthPaths(b, 5000)
	url := testenv.Versitygw(b)
	raw, err := storage.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	c, err := synth.Generate(synth.Config{Paths: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.WriteStore(ctx, raw, 32, nil); err != nil {
		b.Fatal(err)
	}
	keys := synthReachable(c)
	st := storage.NewCounting(raw)
	noGrace := gc.Options{Grace: -1}
	// One round only: the prune changes the bucket. It takes seconds, so the
	// framework does not ask for a second round (or use -benchtime=1x).
	{
		st.Reset()
		cold, err := gc.NewPlan(ctx, st, gc.Options{Grace: -1, NoMemo: true})
		if err != nil {
			b.Fatal(err)
		}
		synthCheckPlan(b, cold.Report(), c, false)
		coldGets := st.Counts()["get"]
		b.ReportMetric(float64(coldGets), "cold-gets")
		b.ReportMetric(float64(coldGets-int64(len(keys))), "cold-gets-minus-reachable")

		synthWriteMemo(b, ctx, st, noGrace)
		st.Reset()
		warm, err := gc.NewPlan(ctx, st, noGrace)
		if err != nil {
			b.Fatal(err)
		}
		warmGets := st.Counts()["get"]
		b.ReportMetric(float64(warmGets), "warm-gets")
		if warm.Report().NarInfoReads != 0 {
			b.Fatalf("warm plan read %d narinfos", warm.Report().NarInfoReads)
		}
		st.Reset()
		r, err := warm.Execute(ctx, synthFence{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		counts := st.Counts()
		b.ReportMetric(float64(r.Deleted.Objects), "deleted")
		b.ReportMetric(float64(counts["batch-delete"]), "delete-requests")
		var parts []string
		for k, v := range counts {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		b.Logf("prune requests: %s; deleted %d objects in %d batches", strings.Join(parts, " "), r.Deleted.Objects, r.Batches)
		if want := (r.Deleted.Objects + 999) / 1000; int64(r.Batches) > want+2 {
			b.Fatalf("%d delete batches for %d objects, want about %d", r.Batches, r.Deleted.Objects, want)
		}
	}
}
