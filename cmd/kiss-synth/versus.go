package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/storage"
)

// The comparison with the original (issue 15): the Rust kiss-cache pruner,
// built beside the project (never in it), and kiss on the same generated
// cache, in paired runs (the two alternate, so both see the same machine):
//
//	cold   dry runs without a memo
//	prune  real prunes, each on its own hard-linked copy of the cache
//	       (--real-copies: a full copy, whose unlinks free what they unlink)
//	warm   dry runs on the cache with each one's memo from its real prune
//	steady a second real prune of each pruned copy
//
// The original takes the marker directory as its GC roots (it has no grace
// period and no notion of logs, so it deletes newborns and leaves logs:
// the work differs in those 0.2 % and 5 %). Each ratio is the median of
// the paired ratios kiss ÷ original. With --orig-kiss the "original" is
// another build of kiss (an A/B between two versions on one cache).
func versusCommand() *cli.Command {
	return &cli.Command{
		Name:  "versus",
		Usage: "kiss prune against the original kiss-cache pruner on one generated cache, in paired runs",
		Flags: append(runFlags("pairs of runs per measurement"),
			&cli.StringFlag{Name: "orig", Required: true, Usage: "path of the original's kiss-cache binary (or, with --orig-kiss, of an older kiss)"},
			&cli.BoolFlag{Name: "orig-kiss", Usage: "--orig is another build of kiss (an A/B of two versions): same arguments, its own memo"},
			&cli.BoolFlag{Name: "real-copies", Usage: "prune full copies (cp -a), whose unlinks free inodes and blocks as on a real cache, not hard-linked ones (cp -al, which only drop names); needs the cache's size free on disk for each copy"},
			&cli.BoolFlag{Name: "drop-caches", Usage: "sync and drop the kernel's page cache before every measured run (root: /proc/sys/vm/drop_caches), so each prune starts with nothing cached"},
		),
		Action: versus,
	}
}

var (
	plainMu   sync.Mutex
	plainBins = map[string]bool{}
)

// plainOutput: bin prints no JSON report (the original).
func plainOutput(bin string) bool {
	plainMu.Lock()
	defer plainMu.Unlock()
	return plainBins[bin]
}

type pair struct {
	Orig, Kiss []run
}

func (p pair) median(f func(run) float64) float64 {
	var r []float64
	for i := range p.Kiss {
		if o := f(p.Orig[i]); o > 0 {
			r = append(r, f(p.Kiss[i])/o)
		}
	}
	if len(r) == 0 {
		return -1
	}
	slices.Sort(r)
	return r[len(r)/2]
}

func maxRSS(rs []run) float64 {
	m := 0.0
	for _, r := range rs {
		m = max(m, r.RSSMiB)
	}
	return m
}

func minOf(rs []run, f func(run) float64) float64 {
	m := -1.0
	for _, r := range rs {
		if v := f(r); m < 0 || v < m {
			m = v
		}
	}
	return m
}

func versus(c *cli.Context) error {
	ctx := c.Context
	say := func(format string, a ...any) { fmt.Fprintf(c.App.ErrWriter, format+"\n", a...) }
	work := c.String("work")
	if ents, err := os.ReadDir(work); err == nil && len(ents) > 0 {
		return cli.Exit(fmt.Sprintf("versus: %s is not empty", work), 2)
	}
	kiss, err := filepath.Abs(c.String("kiss"))
	if err != nil {
		return err
	}
	orig, err := filepath.Abs(c.String("orig"))
	if err != nil {
		return err
	}
	origKiss := c.Bool("orig-kiss")
	if !origKiss {
		plainMu.Lock()
		plainBins[orig] = true
		plainMu.Unlock()
	}
	cacheDir, manDir := filepath.Join(work, "cache"), filepath.Join(work, "manifest")
	timeout, repeat := c.Duration("timeout"), max(1, c.Int("repeat"))
	grace := "--grace=" + c.Duration("grace").String()

	if _, err := generate(c, cacheDir, manDir); err != nil {
		return err
	}

	kissArgs := func(dir string, dry bool) []string {
		a := []string{"--json", "prune", grace}
		if dry {
			a = append(a, "--dry-run")
		}
		return append(a, dir)
	}
	origArgs := func(dir string, dry bool) []string {
		if origKiss {
			return kissArgs(dir, dry)
		}
		a := []string{"prune"}
		if dry {
			a = append(a, "-n")
		}
		return append(a, dir, filepath.Join(dir, "gcroots"))
	}
	dropCaches := func() error {
		if !c.Bool("drop-caches") {
			return nil
		}
		syscall.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
			return fmt.Errorf("versus: --drop-caches: %w", err)
		}
		return nil
	}
	// measure runs both, alternating who goes first.
	measure := func(name string, i int, dirOrig, dirKiss string, dry bool, p *pair) error {
		o := func() error {
			if err := dropCaches(); err != nil {
				return err
			}
			r, err := runChild(ctx, timeout, orig, origArgs(dirOrig, dry)...)
			p.Orig = append(p.Orig, r)
			return err
		}
		k := func() error {
			if err := dropCaches(); err != nil {
				return err
			}
			r, err := runKiss(ctx, timeout, kiss, kissArgs(dirKiss, dry)...)
			p.Kiss = append(p.Kiss, r)
			return err
		}
		first, second := o, k
		if i%2 == 1 {
			first, second = k, o
		}
		if err := first(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := second(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		n := len(p.Kiss) - 1
		say("%-7s %d: original %.3fs (%.3fs CPU, %.0f MiB)  kiss %.3fs (%.3fs CPU, %.0f MiB)", name, i,
			p.Orig[n].Seconds, p.Orig[n].CPU, p.Orig[n].RSSMiB, p.Kiss[n].Seconds, p.Kiss[n].CPU, p.Kiss[n].RSSMiB)
		return nil
	}
	cpMode := "-al"
	if c.Bool("real-copies") {
		cpMode = "-a"
	}
	cpWith := func(mode, dst string) error {
		os.RemoveAll(dst)
		if out, err := exec.CommandContext(ctx, "cp", mode, cacheDir, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("versus: cp %s: %w: %s", mode, err, out)
		}
		return nil
	}
	cp := func(dst string) error { return cpWith(cpMode, dst) }

	var cold, prune, warm, steady pair
	for i := range repeat {
		if err := measure("cold", i, cacheDir, cacheDir, true, &cold); err != nil {
			return err
		}
	}
	origCopy, kissCopy := filepath.Join(work, "orig"), filepath.Join(work, "kiss")
	for i := range repeat {
		if err := cp(origCopy); err != nil {
			return err
		}
		if err := cp(kissCopy); err != nil {
			return err
		}
		syscall.Sync()
		if err := measure("prune", i, origCopy, kissCopy, false, &prune); err != nil {
			return err
		}
	}
	st, err := storage.OpenFile(kissCopy)
	if err != nil {
		return err
	}
	chk, err := synth.Check(ctx, st, manDir, 8)
	st.Close()
	if err != nil {
		return err
	}
	if len(chk.LiveMissing) > 0 || chk.NewbornMissing > 0 || chk.GarbageLeft > 0 {
		return fmt.Errorf("versus: kiss's prune: %d live and %d newborn missing, %d garbage left", len(chk.LiveMissing), chk.NewbornMissing, chk.GarbageLeft)
	}
	// A memo names each narinfo's inode (file:// ETags do): the memos of
	// real copies fit no other copy, so with --real-copies each program
	// first prunes a hard-linked copy, untimed, to leave one that fits.
	if c.Bool("real-copies") {
		origCopy, kissCopy = filepath.Join(work, "orig-linked"), filepath.Join(work, "kiss-linked")
		for _, dst := range []string{origCopy, kissCopy} {
			if err := cpWith("-al", dst); err != nil {
				return err
			}
		}
		if _, err := runChild(ctx, timeout, orig, origArgs(origCopy, false)...); err != nil {
			return fmt.Errorf("versus: the memo run: %w", err)
		}
		if _, err := runKiss(ctx, timeout, kiss, kissArgs(kissCopy, false)...); err != nil {
			return fmt.Errorf("versus: the memo run: %w", err)
		}
	}
	// Both memos into the unpruned cache (hard links share inodes, so the
	// fingerprints match). Another kiss keeps its memo under .kiss/memo/
	// too: another version of it is copied beside kiss's; the same version
	// is the same format, and both read kiss's.
	memos := []struct{ from, to string }{
		{filepath.Join(kissCopy, filepath.FromSlash(gc.MemoKey)), filepath.Join(cacheDir, filepath.FromSlash(gc.MemoKey))},
	}
	if origKiss {
		dir := filepath.Dir(filepath.FromSlash(gc.MemoKey))
		ents, err := os.ReadDir(filepath.Join(origCopy, dir))
		if err != nil {
			return fmt.Errorf("versus: no memo: %w", err)
		}
		sameVersion := false
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case !e.Type().IsRegular():
			case p == filepath.FromSlash(gc.MemoKey):
				sameVersion = true
			default:
				memos = append(memos, struct{ from, to string }{filepath.Join(origCopy, p), filepath.Join(cacheDir, p)})
			}
		}
		if len(memos) == 1 && sameVersion {
			say("the other kiss keeps the same memo version (%s): both warm runs read kiss's", gc.MemoKey)
			memos = append(memos, memos[0]) // checked and copied twice: harmless
		}
	} else {
		memos = append(memos, struct{ from, to string }{filepath.Join(origCopy, ".kiss-cache.closures"), filepath.Join(cacheDir, ".kiss-cache.closures")})
	}
	if len(memos) < 2 {
		return fmt.Errorf("versus: the other kiss left no memo of another version in %s", origCopy)
	}
	for _, m := range memos {
		data, err := os.ReadFile(m.from)
		if err != nil {
			return fmt.Errorf("versus: no memo: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(m.to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(m.to, data, 0o644); err != nil {
			return err
		}
	}
	for i := range repeat {
		if err := measure("warm", i, cacheDir, cacheDir, true, &warm); err != nil {
			return err
		}
	}
	if err := measure("steady", 0, origCopy, kissCopy, false, &steady); err != nil {
		return err
	}
	if num(warm.Kiss[0].Report, "narinfo_reads") != 0 {
		return fmt.Errorf("versus: kiss's warm run read narinfos")
	}
	if origKiss && num(warm.Orig[0].Report, "narinfo_reads") != 0 {
		return fmt.Errorf("versus: the other kiss's warm run read narinfos (did it find its memo?)")
	}

	wall := func(r run) float64 { return r.Seconds }
	cpu := func(r run) float64 { return r.CPU }
	res := map[string]any{"paths": c.Int("paths"), "pairs": repeat}
	say("\n| measurement | original wall (best) | kiss wall (best) | wall ratio (median of pairs) | CPU ratio | peak RSS original / kiss (MiB) | RSS ratio |")
	say("|---|---:|---:|---:|---:|---:|---:|")
	for _, m := range []struct {
		name string
		p    pair
	}{{"cold dry run", cold}, {"warm dry run", warm}, {"real prune", prune}, {"steady state", steady}} {
		ro, rk := maxRSS(m.p.Orig), maxRSS(m.p.Kiss)
		say("| %s | %.3f s | %.3f s | %.2f× | %.2f× | %.0f / %.0f | %.2f× |", m.name, minOf(m.p.Orig, wall), minOf(m.p.Kiss, wall),
			m.p.median(wall), m.p.median(cpu), ro, rk, rk/ro)
		res[m.name] = map[string]any{"orig": m.p.Orig, "kiss": m.p.Kiss, "wall_ratio": m.p.median(wall), "cpu_ratio": m.p.median(cpu), "rss_orig_mib": ro, "rss_kiss_mib": rk}
	}
	enc, _ := json.MarshalIndent(res, "", "  ")
	if p := c.String("json-out"); p != "" {
		if err := os.WriteFile(p, append(enc, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
