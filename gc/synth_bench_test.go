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
	"slices"
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
	defer p.Close()
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
	defer p.Close()
	synthCheckPlan(b, p.Report(), c, true)
	conc := p.Report().Concurrency
	synthWriteMemo(b, ctx, st, opts)

	var base, cold, warm time.Duration
	var lastCold, lastWarm *gc.Report
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
		lastCold, lastWarm = pc.Report(), pw.Report()
		pc.Close()
		pw.Close()
		base += t1.Sub(t0)
		cold += t2.Sub(t1)
		warm += t3.Sub(t2)
	}
	b.Logf("%d paths, %d reachable, concurrency %d: baseline %.3fs; phases cold %v warm %v",
		n, len(keys), conc, base.Seconds()/float64(b.N), lastCold.Phases, lastWarm.Phases)
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
	// delta runs fn and returns the requests it made, by type: the
	// decorator's own counts plus the driver's HTTP requests (retries
	// included), which Reset does not zero.
	delta := func(name string, fn func()) map[string]int64 {
		before := st.Counts()
		fn()
		d := map[string]int64{}
		for k, v := range st.Counts() {
			if v -= before[k]; v != 0 {
				d[k] = v
			}
		}
		var parts []string
		for k, v := range d {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		slices.Sort(parts)
		b.Logf("%s requests: %s", name, strings.Join(parts, " "))
		return d
	}
	b.ResetTimer()
	// One round only: the prune changes the bucket. The framework does not
	// ask for a second round of something this slow (or use -benchtime=1x).
	{
		var cold, warm *gc.Plan
		var err error
		dc := delta("cold plan", func() { cold, err = gc.NewPlan(ctx, st, gc.Options{Grace: -1, NoMemo: true}) })
		if err != nil {
			b.Fatal(err)
		}
		defer cold.Close()
		synthCheckPlan(b, cold.Report(), c, false)
		b.ReportMetric(float64(dc["get"]), "cold-gets")
		b.ReportMetric(float64(dc["get"]-int64(len(keys))), "cold-gets-minus-reachable")
		if extra := dc["get"] - int64(len(keys)); extra < 0 || extra > 100 {
			b.Fatalf("cold plan: %d GETs for %d reachable narinfos", dc["get"], len(keys))
		}

		synthWriteMemo(b, ctx, st, noGrace)
		dw := delta("warm plan", func() { warm, err = gc.NewPlan(ctx, st, noGrace) })
		if err != nil {
			b.Fatal(err)
		}
		defer warm.Close()
		b.ReportMetric(float64(dw["get"]), "warm-gets")
		if warm.Report().NarInfoReads != 0 || dw["get"] > 20 {
			b.Fatalf("warm plan read %d narinfos, %d GETs", warm.Report().NarInfoReads, dw["get"])
		}
		var r *gc.Report
		de := delta("execute", func() { r, err = warm.Execute(ctx, synthFence{}, nil) })
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(r.Deleted.Objects), "deleted")
		b.ReportMetric(float64(de["http:DeleteObjects"]), "DeleteObjects-requests")
		b.Logf("%d paths, %d reachable; deleted %d objects in %d batches", n, len(keys), r.Deleted.Objects, r.Batches)
		if want := (r.Deleted.Objects + 999) / 1000; int64(r.Batches) > want+2 || de["http:DeleteObjects"] > want+2 {
			b.Fatalf("%d delete batches for %d objects, want about %d", r.Batches, r.Deleted.Objects, want)
		}
	}
}
