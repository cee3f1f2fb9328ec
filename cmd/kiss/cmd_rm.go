package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/prune"
)

func init() {
	register(&cli.Command{
		Name:      "rm",
		Usage:     "delete store paths from the cache now, unless a root still needs them",
		ArgsUsage: "STORE PATH...",
		Description: `Deletes each PATH (a store path, base name or hash) now, as nix-store
--delete does for a local store: its narinfo, its .ls, the realisations and
build traces naming it, its build log unless another kept path was built by
the same derivation, and its NAR unless another narinfo names it (with the
debuginfo links into that NAR) — metadata first, the NAR last, under the
prune lease, like a prune.

Refused, deleting nothing, while a root still keeps a PATH: a marker names
it or a path in its closure, or an upload within the grace period needs it
(the error names the root, as kiss why would). Remove the root first
(kiss roots rm), or remove the paths that need it together with it. The
paths only a removed path kept are left for the next prune.

To be sure no other narinfo names a NAR it deletes, rm reads every narinfo no
root keeps (a prune just before makes that cheap).

EXIT STATUS
   0  deleted (or, with --dry-run, would delete)
   1  a PATH is not in the cache; nothing deleted
   2  bad arguments or store URL
   3  the store cannot be read, or a delete failed
   4  refused: a root still keeps a PATH; nothing deleted
   5  a prune holds the lease and --lock-wait ran out
   6  the lease was lost while deleting`,
		Flags: append(rootFlags(),
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "say what would be deleted; take no lease, delete nothing"},
			durFlag(cli.DurationFlag{Name: "lock-wait", Value: defaultLockWait, Usage: "how long to wait for the prune lease"}),
			durFlag(cli.DurationFlag{Name: "lock-ttl", Value: 30 * time.Minute, Usage: "lease TTL (refreshed every TTL/6)"}),
			&cli.BoolFlag{Name: "json", Usage: "JSON output (same as the global --json)"},
		),
		Action: runRm,
	})
}

func runRm(c *cli.Context) error {
	if c.NArg() < 2 {
		return usageError(errors.New("rm: want STORE PATH…"))
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
	var dels []gc.Deletion
	rep, err := prune.Remove(ctx, st, hs, prune.Options{
		Options:    opts,
		DryRun:     c.Bool("dry-run"),
		LockWait:   c.Duration("lock-wait"),
		LockTTL:    c.Duration("lock-ttl"),
		Owner:      "kiss rm",
		OnDeletion: func(d gc.Deletion) { dels = append(dels, d) },
	})
	code := ExitOK
	switch {
	case err == nil:
	case errors.Is(err, gc.ErrRooted):
		code = ExitRefused
	case errors.Is(err, gc.ErrNotInCache):
		code = ExitFailure
	default:
		code = pruneExitCode(ctx, err)
	}
	if jsonWanted(c) {
		if werr := writeJSON(c.App.Writer, pruneOutput{Report: rep, Deletions: dels, ExitCode: code}); werr != nil {
			return werr
		}
	} else if err == nil {
		verb := "deleted"
		if rep.DryRun {
			verb = "would delete"
		}
		for _, d := range dels {
			fmt.Fprintf(c.App.Writer, "%s %s\n", verb, d.Key)
		}
		n := rep.Deleted
		if rep.DryRun {
			n = rep.DeleteTotal
		}
		fmt.Fprintf(c.App.Writer, "%s %d objects, %s\n", verb, n.Objects, humanBytes(n.Bytes))
		for _, w := range rep.Warnings {
			fmt.Fprintf(c.App.Writer, "warning: %s\n", w)
		}
	}
	if err != nil {
		if jsonWanted(c) {
			fmt.Fprintf(c.App.ErrWriter, "kiss: %v\n", err)
			return &silentExit{code}
		}
		return withExit(code, err)
	}
	return nil
}
