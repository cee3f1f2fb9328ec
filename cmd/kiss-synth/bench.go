package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/storage"
)

// The prune benchmark (issue 4): generate a cache, then measure in one run
//
//	baseline  a parallel read of every reachable narinfo (keys known), at
//	          the pruner's own concurrency, best of --repeat
//	cold      `kiss prune --dry-run` with no memo in the cache
//	prune     a real `kiss prune` on a hard-linked copy (writes the memo),
//	          then checked against the manifest: nothing live lost
//	warm      `kiss prune --dry-run` on the original with that memo
//
// and compare cold/baseline and warm/baseline with the targets. Times of
// kiss are wall-clock times of the whole process; RSS is the child's peak
// (GNU time %M, see runChild).
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "the prune benchmark: baseline vs cold/warm `kiss prune` on a generated cache",
		Flags: append(runFlags("runs of each measurement; the fastest counts"),
			&cli.Float64Flag{Name: "cold-target", Value: 1.5},
			&cli.Float64Flag{Name: "warm-target", Value: 0.3},
			&cli.Float64Flag{Name: "rss-target-mib", Value: 400},
			&cli.Float64Flag{Name: "fail-factor", Value: 0, Usage: "exit 1 when a target is missed by more than this factor (0: report only)"},
		),
		Action: bench,
	}
}

// generate writes the cache the flags describe into cacheDir and its
// manifest into manDir, and flushes them to disk: otherwise the first
// measurement competes with the writeback of gigabytes and the ones after
// it do not.
func generate(c *cli.Context, cacheDir, manDir string) (synth.Summary, error) {
	var sum synth.Summary
	t0 := time.Now()
	cache, err := synth.Generate(synth.Config{Paths: c.Int("paths"), Seed: c.Uint64("seed")})
	if err != nil {
		return sum, cli.Exit(err, 2)
	}
	if err := cache.WriteDir(c.Context, cacheDir, 8, nil); err != nil {
		return sum, err
	}
	if err := cache.WriteManifest(manDir); err != nil {
		return sum, err
	}
	cache = nil // the manifest says all the rest needs
	if b, err := os.ReadFile(filepath.Join(manDir, synth.SummaryFile)); err == nil {
		_ = json.Unmarshal(b, &sum)
	}
	fmt.Fprintf(c.App.ErrWriter, "generated %d narinfos (%d reachable, %d objects, mean narinfo %.0f B, %.1f refs, depth %d) in %.1fs\n",
		sum.Narinfos, sum.Reachable, total(sum.Counts), sum.MeanNarinfo, sum.MeanRefs, sum.MaxDepth, time.Since(t0).Seconds())
	syscall.Sync()
	return sum, nil
}

// runFlags are the flags of the commands that generate a cache and run
// kiss on it (bench, versus).
func runFlags(repeat string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kiss", Required: true, Usage: "path of the kiss binary"},
		&cli.StringFlag{Name: "work", Required: true, Usage: "scratch directory (must be empty or absent)"},
		&cli.IntFlag{Name: "paths", Aliases: []string{"n"}, Value: 100000},
		&cli.Uint64Flag{Name: "seed", Value: 1},
		&cli.IntFlag{Name: "repeat", Value: 3, Usage: repeat},
		&cli.DurationFlag{Name: "grace", Value: time.Hour},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Minute, Usage: "bound on each run"},
		&cli.StringFlag{Name: "json-out", Usage: "also write the results here"},
	}
}

// run is one measured kiss process.
type run struct {
	Seconds float64 `json:"seconds"`
	// CPU is user+system seconds of the child: robust when other jobs
	// share the machine, unlike wall time.
	CPU    float64        `json:"cpu_seconds"`
	RSSMiB float64        `json:"max_rss_mib"`
	Report map[string]any `json:"-"`
}

func runKiss(ctx context.Context, timeout time.Duration, bin string, args ...string) (run, error) {
	return runChild(ctx, timeout, bin, args...)
}

// runChild runs bin, which prints one JSON object, and measures it.
func runChild(ctx context.Context, timeout time.Duration, bin string, args ...string) (run, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Peak RSS comes from GNU time when it is there: the rusage of a child
	// started by this (large) Go process is wrong, because Go starts
	// children with vfork semantics and exec(2) records the parent's
	// high-water RSS as the child's starting maxrss.
	rssFile := ""
	cmd := exec.CommandContext(ctx, bin, args...)
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		f, err := os.CreateTemp("", "kiss-synth-rss-*")
		if err != nil {
			return run{}, err
		}
		rssFile = f.Name()
		f.Close()
		defer os.Remove(rssFile)
		cmd = exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, bin}, args...)...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "KISS_LOG_LEVEL=warn")
	t0 := time.Now()
	err := cmd.Run()
	r := run{Seconds: time.Since(t0).Seconds()}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.RSSMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
		}
		r.CPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if rssFile != "" {
		r.RSSMiB = -1 // unknown unless GNU time says
		if b, err := os.ReadFile(rssFile); err == nil {
			var kib float64
			if _, err := fmt.Sscan(strings.TrimSpace(lastLine(string(b))), &kib); err == nil {
				r.RSSMiB = kib / 1024
			}
		}
	}
	if err != nil {
		return r, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	if plainOutput(bin) {
		return r, nil
	}
	if err := json.Unmarshal(stdout.Bytes(), &r.Report); err != nil {
		return r, fmt.Errorf("%s %s: output is not one JSON report: %w\n%s", bin, strings.Join(args, " "), err, tail(stdout.String(), 2000))
	}
	return r, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// num digs a number out of the report ("memo.hits").
func num(rep map[string]any, path string) float64 {
	var v any = rep
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return -1
		}
		v = m[p]
	}
	switch x := v.(type) {
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
		return 0
	}
	return -1
}

func best(ctx context.Context, n int, timeout time.Duration, bin string, args ...string) (run, error) {
	var b run
	for i := range max(n, 1) {
		r, err := runKiss(ctx, timeout, bin, args...)
		if err != nil {
			return r, err
		}
		if i == 0 || r.Seconds < b.Seconds {
			b.Seconds, b.Report = r.Seconds, r.Report
		}
		if i == 0 || r.CPU < b.CPU {
			b.CPU = r.CPU
		}
		b.RSSMiB = max(b.RSSMiB, r.RSSMiB)
	}
	return b, nil
}

func bench(c *cli.Context) error {
	ctx := c.Context
	out := c.App.ErrWriter
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	work := c.String("work")
	if ents, err := os.ReadDir(work); err == nil && len(ents) > 0 {
		return cli.Exit(fmt.Sprintf("bench: %s is not empty", work), 2)
	}
	kiss, err := filepath.Abs(c.String("kiss"))
	if err != nil {
		return err
	}
	cacheDir, copyDir, manDir := filepath.Join(work, "cache"), filepath.Join(work, "pruned"), filepath.Join(work, "manifest")
	timeout, repeat := c.Duration("timeout"), c.Int("repeat")
	grace := "--grace=" + c.Duration("grace").String()

	sum, err := generate(c, cacheDir, manDir)
	if err != nil {
		return err
	}

	// Cold: no memo exists yet in cacheDir.
	cold, err := best(ctx, repeat, timeout, kiss, "--json", "prune", "--dry-run", grace, cacheDir)
	if err != nil {
		return err
	}
	if num(cold.Report, "memo.loaded") == 1 {
		return fmt.Errorf("bench: the cold dry run found a memo: did --dry-run write one?")
	}
	conc := int(num(cold.Report, "concurrency"))
	if conc < 1 {
		return fmt.Errorf("bench: the prune report has no concurrency")
	}
	reach := num(cold.Report, "reachable.objects")
	wantReach := float64(sum.Reachable + sum.Counts["newborn"]["narinfo"]) // young narinfos are roots
	if reach != wantReach {
		return fmt.Errorf("bench: kiss found %.0f reachable narinfos, the generator %.0f", reach, wantReach)
	}
	say("cold dry run:  %.3fs (%.3fs CPU), max RSS %.0f MiB, %0.f narinfo reads (concurrency %d)", cold.Seconds, cold.CPU, cold.RSSMiB, num(cold.Report, "narinfo_reads"), conc)

	// Baseline, at the same concurrency, best of repeat, in a child process
	// (`kiss-synth read`) so that neither this process's heap (the cache
	// description) nor its GC is charged to it.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var base synth.ReadResult
	baseCPU := -1.0
	for i := range max(repeat, 1) {
		r, err := runChild(ctx, timeout, self, "read", "--store", cacheDir, "--keys", filepath.Join(manDir, synth.ReachableFile), "--jobs", fmt.Sprint(conc))
		if err != nil {
			return err
		}
		el := time.Duration(num(r.Report, "seconds") * float64(time.Second))
		if i == 0 || el < base.Elapsed {
			base = synth.ReadResult{Objects: int(num(r.Report, "objects")), Bytes: int64(num(r.Report, "bytes")), Elapsed: el}
		}
		if baseCPU < 0 || r.CPU < baseCPU {
			baseCPU = r.CPU
		}
	}
	if base.Objects != sum.Reachable || base.Elapsed <= 0 {
		return fmt.Errorf("bench: baseline read %d objects in %v, want %d", base.Objects, base.Elapsed, sum.Reachable)
	}
	say("baseline read: %.3fs (%.3fs CPU) for %d narinfos (%d bytes)", base.Elapsed.Seconds(), baseCPU, base.Objects, base.Bytes)

	// A real prune on a hard-linked copy: it deletes, and writes the memo.
	if out, err := exec.CommandContext(ctx, "cp", "-al", cacheDir, copyDir).CombinedOutput(); err != nil {
		return fmt.Errorf("bench: cp -al: %w: %s", err, out)
	}
	prune, err := runKiss(ctx, timeout, kiss, "--json", "prune", grace, copyDir)
	if err != nil {
		return err
	}
	say("real prune:    %.3fs, max RSS %.0f MiB, deleted %.0f objects in %.0f batches",
		prune.Seconds, prune.RSSMiB, num(prune.Report, "deleted.objects"), num(prune.Report, "batches"))
	cst, err := storage.OpenFile(copyDir)
	if err != nil {
		return err
	}
	chk, err := synth.Check(ctx, cst, manDir, 8)
	cst.Close()
	if err != nil {
		return err
	}
	say("check:         %d live missing, %d newborn missing, %d of %d garbage left", len(chk.LiveMissing), chk.NewbornMissing, chk.GarbageLeft, chk.GarbageTotal)

	// Warm: the memo the real prune wrote, put into the untouched cache (the
	// copy shares inodes, so its fingerprints match).
	memo, err := os.ReadFile(filepath.Join(copyDir, filepath.FromSlash(gc.MemoKey)))
	if err != nil {
		return fmt.Errorf("bench: the real prune left no memo: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Join(cacheDir, filepath.FromSlash(gc.MemoKey))), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cacheDir, filepath.FromSlash(gc.MemoKey)), memo, 0o644); err != nil {
		return err
	}
	warm, err := best(ctx, repeat, timeout, kiss, "--json", "prune", "--dry-run", grace, cacheDir)
	if err != nil {
		return err
	}
	say("warm dry run:  %.3fs (%.3fs CPU), max RSS %.0f MiB, %.0f narinfo reads, %.0f memo hits", warm.Seconds, warm.CPU, warm.RSSMiB, num(warm.Report, "narinfo_reads"), num(warm.Report, "memo.hits"))
	again, err := runKiss(ctx, timeout, kiss, "--json", "prune", grace, copyDir)
	if err != nil {
		return err
	}
	say("2nd prune:     %.3fs (steady state, warm), deleted %.0f", again.Seconds, num(again.Report, "deleted.objects"))

	b := base.Elapsed.Seconds()
	res := map[string]any{
		"paths": sum.Narinfos, "reachable": sum.Reachable, "concurrency": conc,
		"baseline_s": b, "cold_s": cold.Seconds, "warm_s": warm.Seconds, "prune_s": prune.Seconds, "prune2_s": again.Seconds,
		"cold_ratio": cold.Seconds / b, "warm_ratio": warm.Seconds / b,
		"baseline_cpu_s": baseCPU, "cold_cpu_s": cold.CPU, "warm_cpu_s": warm.CPU,
		"cold_cpu_ratio": cold.CPU / baseCPU, "warm_cpu_ratio": warm.CPU / baseCPU,
		"rss_mib": map[string]float64{"cold": cold.RSSMiB, "warm": warm.RSSMiB, "prune": prune.RSSMiB},
		"phases":  map[string]any{"cold": cold.Report["phase_seconds"], "warm": warm.Report["phase_seconds"], "prune": prune.Report["phase_seconds"]},
		"check":   chk, "warm_narinfo_reads": num(warm.Report, "narinfo_reads"),
		"deleted": num(prune.Report, "deleted.objects"), "batches": num(prune.Report, "batches"),
	}
	enc, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(c.App.Writer, string(enc))
	if p := c.String("json-out"); p != "" {
		if err := os.WriteFile(p, append(enc, '\n'), 0o644); err != nil {
			return err
		}
	}
	say("phases cold %v\nphases warm %v", cold.Report["phase_seconds"], warm.Report["phase_seconds"])

	rss := max(cold.RSSMiB, warm.RSSMiB)
	say("\nCPU     cold/baseline %.2f  warm/baseline %.2f (user+sys seconds: robust to other load; targets are on wall time)",
		cold.CPU/baseCPU, warm.CPU/baseCPU)
	say("RESULT  cold/baseline %.2f (target ≤ %.2f)  warm/baseline %.2f (target ≤ %.2f)  dry-run RSS %.0f MiB (target ≤ %.0f at 1M)",
		cold.Seconds/b, c.Float64("cold-target"), warm.Seconds/b, c.Float64("warm-target"), rss, c.Float64("rss-target-mib"))

	var errs []error
	if len(chk.LiveMissing) > 0 || chk.NewbornMissing > 0 {
		errs = append(errs, fmt.Errorf("the prune deleted %d live and %d newborn objects (e.g. %v)", len(chk.LiveMissing), chk.NewbornMissing, first(chk.LiveMissing)))
	}
	if chk.GarbageLeft > 0 {
		errs = append(errs, fmt.Errorf("the prune left %d of %d garbage objects", chk.GarbageLeft, chk.GarbageTotal))
	}
	if num(warm.Report, "narinfo_reads") != 0 {
		errs = append(errs, fmt.Errorf("the warm run read %.0f narinfos", num(warm.Report, "narinfo_reads")))
	}
	if f := c.Float64("fail-factor"); f > 0 {
		if r := cold.Seconds / b; r > f*c.Float64("cold-target") {
			errs = append(errs, fmt.Errorf("cold/baseline %.2f is more than %.1f× the target %.2f", r, f, c.Float64("cold-target")))
		}
		if r := warm.Seconds / b; r > f*c.Float64("warm-target") {
			errs = append(errs, fmt.Errorf("warm/baseline %.2f is more than %.1f× the target %.2f", r, f, c.Float64("warm-target")))
		}
		if rss > f*c.Float64("rss-target-mib") {
			errs = append(errs, fmt.Errorf("peak RSS %.0f MiB is more than %.1f× the target %.0f MiB", rss, f, c.Float64("rss-target-mib")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Exit("FAIL: "+err.Error(), 1)
	}
	say("OK")
	return nil
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func total(m map[string]map[string]int) int {
	n := 0
	for _, c := range m {
		for _, v := range c {
			n += v
		}
	}
	return n
}
