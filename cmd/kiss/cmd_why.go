package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/explain"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// rootFlags are the flags that say what the next prune would count as a
// root; why, du and rm judge with them exactly as prune does.
func rootFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "roots", Usage: "extra root source, as for prune"},
		durFlag(cli.DurationFlag{Name: "root-max-age", Usage: "markers older than this root nothing, as for prune (e.g. 30d)"}),
		durFlag(cli.DurationFlag{Name: "grace", Value: gc.DefaultGrace, Usage: "narinfos younger than this are roots, as for prune"}),
		&cli.IntFlag{Name: "concurrency", Usage: "parallel narinfo reads (default: as prune)"},
	}
}

// rootOptions reads rootFlags into gc.Options.
func rootOptions(c *cli.Context) (gc.Options, error) {
	maxAge := c.Duration("root-max-age")
	if maxAge < 0 {
		return gc.Options{}, usageError(errors.New("--root-max-age must not be negative"))
	}
	grace := c.Duration("grace")
	if grace < 0 {
		return gc.Options{}, usageError(errors.New("--grace must not be negative"))
	}
	if grace == 0 {
		grace = -1 // gc: negative means none
	}
	return gc.Options{
		RootSources: c.StringSlice("roots"),
		RootMaxAge:  maxAge,
		Grace:       grace,
		Concurrency: c.Int("concurrency"),
		Logger:      slog.Default(),
		Progress:    newProgress(c.App.ErrWriter),
	}, nil
}

// openForRoots reads the root flags and opens STORE, the first argument,
// for the commands that judge reachability as prune does (why, du, rm,
// report). The caller closes the store.
func openForRoots(c *cli.Context) (storage.Store, gc.Options, error) {
	opts, err := rootOptions(c)
	if err != nil {
		return nil, gc.Options{}, err
	}
	st, err := openStore(c.Context, c.Args().First())
	if err != nil {
		return nil, gc.Options{}, err
	}
	return st, opts, nil
}

// pathHashes maps store paths, base names or hashes to hashes, in the
// cache's store directory.
func pathHashes(ctx context.Context, st storage.Store, args []string) ([]nixcache.Hash, error) {
	storeDir, err := roots.StoreDir(ctx, st)
	if err != nil {
		return nil, withExit(ExitStore, err)
	}
	hs := make([]nixcache.Hash, len(args))
	for i, a := range args {
		if hs[i], err = nixcache.HashOf(a, storeDir); err != nil {
			return nil, usageError(err)
		}
	}
	return hs, nil
}

// viewError maps gc.NewView's errors to exit codes.
func viewError(err error) error {
	switch {
	case errors.Is(err, gc.ErrRootsUnavailable), errors.Is(err, gc.ErrIntegrity):
		return withExit(ExitRefused, err)
	case errors.Is(err, gc.ErrNotInCache):
		return withExit(ExitFailure, err)
	}
	return withExit(ExitStore, err)
}

func init() {
	register(&cli.Command{
		Name:      "why",
		Usage:     "why is a path in the cache: the shortest chain from a root, or when the next prune deletes it",
		ArgsUsage: "STORE PATH...",
		Description: `PATH is a store path (/nix/store/<hash>-<name>), a base name or a hash.
The answer is the pruner's: the same roots (gcroots/, --roots, markers older
than --root-max-age root nothing, narinfos younger than --grace are roots),
the same walk through References and Deriver, the same closure memo. A path
no root keeps is deleted by the next prune once it is older than the grace
period; the answer says from when.

EXIT STATUS
   0  answered (kept or not: see "kept" in --json)
   1  a path is not in the cache
   2  bad arguments or store URL
   3  the store cannot be read
   4  the roots cannot be read (as prune would refuse)`,
		Flags:  append(rootFlags(), &cli.BoolFlag{Name: "json", Usage: "JSON output (same as the global --json)"}),
		Action: runWhy,
	})
}

func runWhy(c *cli.Context) error {
	if c.NArg() < 2 {
		return usageError(errors.New("why: want STORE PATH…"))
	}
	ctx := c.Context
	st, opts, err := openForRoots(c)
	if err != nil {
		return err
	}
	defer st.Close()
	hs, err := pathHashes(ctx, st, c.Args().Slice()[1:])
	if err != nil {
		return err
	}
	v, err := gc.NewView(ctx, st, opts)
	if err != nil {
		return viewError(err)
	}
	defer v.Close()
	var answers []*explain.Answer
	for _, h := range hs {
		a, err := explain.Why(ctx, st, v, h)
		if err != nil {
			return viewError(err)
		}
		answers = append(answers, a)
	}
	if jsonWanted(c) {
		return writeJSON(c.App.Writer, answers)
	}
	for _, a := range answers {
		writeWhy(c, a)
	}
	return nil
}

func writeWhy(c *cli.Context, a *explain.Answer) {
	w := c.App.Writer
	if !a.Kept {
		fmt.Fprintf(w, "%s\n  not reachable from any root — ", a.Path)
		switch {
		case a.DeletableAt.IsZero():
			fmt.Fprintln(w, "the next prune deletes it")
		case a.DeletableAt.After(a.Now):
			fmt.Fprintf(w, "kept for now as younger than the grace period (%s); a prune after %s deletes it (in %s)\n",
				a.Grace, a.DeletableAt.UTC().Format(time.RFC3339), shortAge(a.DeletableAt.Sub(a.Now)))
		default:
			fmt.Fprintf(w, "would be deleted by the next prune (older than the grace period %s since %s)\n",
				a.Grace, a.DeletableAt.UTC().Format(time.RFC3339))
		}
		return
	}
	fmt.Fprintf(w, "%s\n  kept by %s\n", a.Path, a.Root)
	for i, l := range a.Chain {
		switch {
		case i == 0 && a.Marker != "":
			fmt.Fprintf(w, "  %s names %s\n", a.Marker, l.Path)
		case i == 0:
			fmt.Fprintf(w, "  %s (a root while younger than the grace period %s)\n", l.Path, a.Grace)
		default:
			fmt.Fprintf(w, "  → %s (%s)\n", l.Path, l.Via)
		}
	}
}
