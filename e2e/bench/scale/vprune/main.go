// Command vprune prunes a virtual cache (internal/vstore) in this process
// and prints one JSON line: wall and CPU time, peak RSS, the report, the
// requests by type, and for a real prune the check against the generator's
// answer. e2e/bench/scale.sh runs it once per measurement (a fresh process
// each, so the peak RSS is that run's).
//
//	vprune -paths 1000000 -mode cold
//	vprune -paths 1000000 -mode real -state DIR    # prunes, saves memo + deletions in DIR
//	vprune -paths 1000000 -mode warm -state DIR    # dry run, unpruned cache, DIR's memo
//	vprune -paths 1000000 -mode steady -state DIR  # real prune of the pruned cache
//	vprune -paths 1000000 -mode list               # the listing alone (the floor of a prune)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiss-cache/kiss/e2e/bench/scale/result"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/vstore"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/prune"
	"github.com/kiss-cache/kiss/storage"
)

type fence struct{}

func (fence) Confirm(context.Context) error { return nil }

type refuse struct{}

func (refuse) Confirm(context.Context) error { return fmt.Errorf("dry run") }

func status(field string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func main() {
	paths := flag.Int64("paths", 1000000, "narinfos in the virtual cache")
	seed := flag.Uint64("seed", 1, "generator seed")
	mode := flag.String("mode", "cold", "list (the listing alone) | cold (dry, no memo) | real (prune, saves memo and deletions) | warm (dry, memo, unpruned cache) | warmreal (prune, memo, unpruned cache) | steady (prune of the pruned cache)")
	inv := flag.Bool("inventory", false, "list below the top level from the cache's inventory report (as taken at its creation)")
	state := flag.String("state", "", "vstore state directory (memo and deletions between runs)")
	tmp := flag.String("tmp", "", "the pruner's temporary directory")
	conc := flag.Int("concurrency", 0, "narinfo reads in flight (0: the pruner's default)")
	pages := flag.Int("pages", 0, "listing pages in flight (0: default)")
	lat := flag.String("latency", "", "per-request latency: get,head,list,delete-batch (e.g. 10ms,10ms,50ms,100ms)")
	check := flag.Bool("check", true, "check a real prune against the generator's answer")
	answer := flag.Bool("answer", false, "compute the generator's reachable count (a pass over every object)")
	flag.Parse()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(prune.GCPercent) // as kiss prune does
	}

	cfg := vstore.Config{Paths: *paths, Seed: *seed, StateDir: *state, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	if *lat != "" {
		var d [4]time.Duration
		for i, f := range strings.Split(*lat, ",") {
			if i < 4 {
				d[i], _ = time.ParseDuration(f)
			}
		}
		cfg.Latency = vstore.Latency{Get: d[0], Head: d[1], ListPage: d[2], DeleteBatch: d[3], Put: d[0], Delete: d[1]}
	}
	vs, err := vstore.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *mode == "warm" || *mode == "warmreal" {
		vs.ForgetDeletions() // the memo of a real prune, over the unpruned cache
	}
	res := result.Run{Paths: *paths, Mode: *mode, Concurrency: *conc, PagesInFlight: *pages, GOGC: os.Getenv("GOGC")}
	if *answer {
		a := vs.Answer()
		res.WantReach, res.NarInfos, res.Objects = a.Reachable, a.NarInfos, a.Objects
	}
	vs.ResetRequests()
	res.StartRSS = status("VmRSS")
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()

	ctx := context.Background()
	st := storage.NewCounting(vs)
	opts := gc.Options{Grace: time.Hour, Concurrency: *conc, ListPagesInFlight: *pages, TempDir: *tmp,
		DryRun: *mode == "cold" || *mode == "warm"}
	if *inv {
		opts.Snapshot = vs.Snapshot()
	}
	if f := os.Getenv("VPRUNE_CPUPROFILE"); f != "" {
		if w, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(w)
			defer pprof.StopCPUProfile()
		}
	}
	if f := os.Getenv("VPRUNE_HEAPPROFILE"); f != "" {
		// Sample the live heap every second; keep the largest.
		go func() {
			var best uint64
			for range time.Tick(200 * time.Millisecond) {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > best {
					best = ms.HeapAlloc
					if w, err := os.Create(f); err == nil {
						pprof.WriteHeapProfile(w)
						w.Close()
					}
				}
			}
		}()
	}
	var plan *gc.Plan
	var rep *gc.Report
	if *mode == "list" {
		// The listing alone, as the pruner makes it, every object dropped:
		// the floor of any prune that lists the store.
		for batch, lerr := range storage.ListParallel(ctx, st, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: *pages}) {
			if lerr != nil {
				err = lerr
				break
			}
			res.Listed += int64(len(batch))
		}
	} else {
		plan, err = gc.NewPlan(ctx, st, opts)
	}
	if err == nil && plan != nil {
		defer plan.Close()
		rep = plan.Report()
		switch *mode {
		case "real", "steady", "warmreal":
			rep, err = plan.Execute(ctx, fence{}, nil)
		case "memo":
			rep, _ = plan.Execute(ctx, refuse{}, nil)
		}
	}
	res.WallSeconds = time.Since(t0).Seconds()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	res.UserSeconds = time.Duration(ru.Utime.Nano() - ru0.Utime.Nano()).Seconds()
	res.SysSeconds = time.Duration(ru.Stime.Nano() - ru0.Stime.Nano()).Seconds()
	res.PeakRSS = status("VmHWM")
	res.Requests = vs.Requests()
	if err != nil {
		res.Error = err.Error()
	}
	if rep != nil {
		res.Phases = rep.Phases
		res.Reachable, res.Reads, res.MemoHits, res.MemoLoaded = rep.Reachable.Objects, rep.NarInfoReads, rep.Memo.Hits, rep.Memo.Loaded
		res.DeleteTotal, res.Deleted, res.Batches, res.MemoBytes = rep.DeleteTotal.Objects, rep.Deleted.Objects, rep.Batches, rep.Memo.Bytes
		res.Concurrency = rep.Concurrency
	}
	res.Inventory, res.InventoryObjects = *inv, vs.InventoryObjects()
	if err == nil && *check && (*mode == "real" || *mode == "steady" || *mode == "warmreal") {
		c := vs.Check()
		res.Check, res.CheckOK = c.String(), c.OK()
	}
	// A warm run forgot the deletions in memory: it must not save that.
	if *mode != "warm" && *mode != "warmreal" {
		if err := vs.Close(); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if res.Error != "" || (res.Check != "" && !res.CheckOK) {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
