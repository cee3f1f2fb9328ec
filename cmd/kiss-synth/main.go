// Command kiss-synth generates synthetic Nix binary caches and measures the
// prune baseline, for benchmarks (e2e/bench/prune.sh) and stress tests.
//
//	kiss-synth gen   --paths 100000 --seed 1 --dir /tmp/cache --manifest /tmp/man
//	kiss-synth gen   --paths 100000 --store 's3://bucket?endpoint=…' --manifest /tmp/man
//	kiss-synth read  --store /tmp/cache --keys /tmp/man/reachable-narinfos.txt --jobs 16
//	kiss-synth check --store /tmp/cache --manifest /tmp/man
//
// It is a separate binary so that kiss itself carries no benchmark code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/storage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "kiss-synth:", err)
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	jobs := &cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2 * runtime.NumCPU(), Usage: "parallel requests"}
	return &cli.App{
		Name:           "kiss-synth",
		Usage:          "synthetic Nix binary caches for prune benchmarks",
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:  "gen",
				Usage: "generate a cache (deterministic from --seed) and its expected prune outcome",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "paths", Aliases: []string{"n"}, Required: true, Usage: "narinfos in total"},
					&cli.Uint64Flag{Name: "seed", Value: 1},
					&cli.IntFlag{Name: "roots", Value: 8, Usage: "markers under gcroots/"},
					&cli.Float64Flag{Name: "garbage", Value: 0.5, Usage: "share of outputs that are unreachable"},
					&cli.Float64Flag{Name: "refs", Value: 10, Usage: "mean references per path"},
					&cli.DurationFlag{Name: "age", Value: 30 * 24 * time.Hour, Usage: "minimum age of old objects (file fast path)"},
					&cli.BoolFlag{Name: "consistent-nars", Usage: "FileSize/FileHash describe the fake NAR bodies"},
					&cli.StringFlag{Name: "dir", Usage: "write plain files into this new directory (fast path, sets mtimes)"},
					&cli.StringFlag{Name: "store", Usage: "write through a store URL instead (s3://…; mtimes are the store's)"},
					&cli.StringFlag{Name: "manifest", Usage: "write the expected outcome (keys by class, summary.json) here"},
					jobs,
				},
				Action: gen,
			},
			{
				Name:  "read",
				Usage: "the prune baseline: read every key of a list once, in parallel",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "store", Required: true},
					&cli.StringFlag{Name: "keys", Required: true, Usage: "file with one key per line (reachable-narinfos.txt)"},
					&cli.IntFlag{Name: "repeat", Value: 1, Usage: "read the list this many times; report the fastest"},
					jobs,
				},
				Action: read,
			},
			{
				Name:  "check",
				Usage: "compare a (pruned) store with a manifest; exit 1 if a live key is missing",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "store", Required: true},
					&cli.StringFlag{Name: "manifest", Required: true},
					&cli.BoolFlag{Name: "newborn-may-go", Usage: "the prune ran with grace 0"},
					&cli.Float64Flag{Name: "min-deleted", Value: 0, Usage: "exit 1 unless at least this share of garbage is gone"},
					jobs,
				},
				Action: check,
			},
			benchCommand(),
			versusCommand(),
			floorCommand(),
		},
	}
}

func gen(c *cli.Context) error {
	dir, url := c.String("dir"), c.String("store")
	if (dir == "") == (url == "") {
		return cli.Exit("gen: give exactly one of --dir and --store", 2)
	}
	start := time.Now()
	cache, err := synth.Generate(synth.Config{
		Paths:           c.Int("paths"),
		Seed:            c.Uint64("seed"),
		Roots:           c.Int("roots"),
		GarbageFraction: c.Float64("garbage"),
		RefsPerPath:     c.Float64("refs"),
		Age:             c.Duration("age"),
		ConsistentNARs:  c.Bool("consistent-nars"),
	})
	if err != nil {
		return cli.Exit(err, 2)
	}
	progress := func(done, total int) {
		fmt.Fprintf(c.App.ErrWriter, "\rwritten %d/%d objects", done, total)
		if done == total {
			fmt.Fprintln(c.App.ErrWriter)
		}
	}
	if dir != "" {
		err = cache.WriteDir(c.Context, dir, c.Int("jobs"), progress)
	} else {
		var st storage.Store
		st, err = storage.Open(c.Context, url, storage.CreateDir())
		if err != nil {
			return err
		}
		defer st.Close()
		err = cache.WriteStore(c.Context, st, c.Int("jobs"), progress)
	}
	if err != nil {
		return err
	}
	if m := c.String("manifest"); m != "" {
		if err := cache.WriteManifest(m); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.App.ErrWriter, "generated %d narinfos (%d reachable, depth %d) in %.1fs\n",
		len(cache.Paths), countReachable(cache), cache.MaxDepth, time.Since(start).Seconds())
	return nil
}

func countReachable(c *synth.Cache) int {
	n := 0
	for i := range c.Paths {
		if c.Paths[i].Reachable {
			n++
		}
	}
	return n
}

func read(c *cli.Context) error {
	keys, err := synth.ReadKeys(c.String("keys"))
	if err != nil {
		return err
	}
	st, err := storage.Open(c.Context, c.String("store"))
	if err != nil {
		return err
	}
	defer st.Close()
	var best synth.ReadResult
	for i := range max(c.Int("repeat"), 1) {
		res, err := synth.ReadAll(c.Context, st, keys, c.Int("jobs"))
		if err != nil {
			return err
		}
		if i == 0 || res.Elapsed < best.Elapsed {
			best = res
		}
	}
	return json.NewEncoder(c.App.Writer).Encode(map[string]any{
		"objects": best.Objects, "bytes": best.Bytes, "jobs": c.Int("jobs"),
		"seconds": best.Elapsed.Seconds(),
	})
}

func check(c *cli.Context) error {
	st, err := storage.Open(c.Context, c.String("store"))
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := synth.Check(c.Context, st, c.String("manifest"), c.Int("jobs"))
	if err != nil {
		return err
	}
	shown := res
	if len(shown.LiveMissing) > 20 {
		shown.LiveMissing = shown.LiveMissing[:20]
	}
	if err := json.NewEncoder(c.App.Writer).Encode(map[string]any{
		"live_missing": len(res.LiveMissing), "live_missing_sample": shown.LiveMissing,
		"newborn_missing": res.NewbornMissing, "garbage_left": res.GarbageLeft, "garbage_total": res.GarbageTotal,
	}); err != nil {
		return err
	}
	var errs []error
	if len(res.LiveMissing) > 0 {
		errs = append(errs, fmt.Errorf("%d live keys missing (e.g. %v)", len(res.LiveMissing), shown.LiveMissing))
	}
	if res.NewbornMissing > 0 && !c.Bool("newborn-may-go") {
		errs = append(errs, fmt.Errorf("%d newborn keys deleted inside the grace period", res.NewbornMissing))
	}
	if res.GarbageTotal > 0 {
		if gone := 1 - float64(res.GarbageLeft)/float64(res.GarbageTotal); gone < c.Float64("min-deleted") {
			errs = append(errs, fmt.Errorf("only %.1f%% of the garbage was deleted, want at least %.1f%%", 100*gone, 100*c.Float64("min-deleted")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Exit(err, 1)
	}
	return nil
}
