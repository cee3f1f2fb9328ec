package main

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/verify"
)

func init() {
	register(&cli.Command{
		Name:      "verify",
		Usage:     "check a cache: narinfos parse, NARs exist with their size, references resolve (--deep: hashes, signatures)",
		ArgsUsage: "STORE",
		Description: `Reads every narinfo and checks that it parses and describes the path its key
names, that its NAR exists with the size FileSize states, and that every
reference has a narinfo. --deep also downloads every NAR and checks FileHash,
NarHash and NarSize and, with --trusted-key, that a trusted key signed it.
Problems are reported by kind; nothing is changed, except:

--quarantine moves each narinfo whose NAR is missing to
.kiss/quarantine/<hash>.narinfo (under a writer lease), so Nix clients stop
failing on it and the next push uploads the path again. The pruner never
deletes quarantined narinfos nor counts them. --restore puts them back
where the path is whole again (no narinfo has appeared since, and its NAR
and references are present); the others stay, with the reason.

The report is kept in the cache (.kiss/reports/verify/<time>.json) for
kiss report, unless --no-save. See docs/operator.md.

EXIT STATUS
   0  no problem found (or --restore done)
   2  bad arguments or store URL
   3  the store cannot be read
   5  --quarantine/--restore: a prune held the lock past --lock-wait
   8  problems found (listed on stdout)`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "deep", Usage: "download every NAR: check FileHash, NarHash, NarSize and signatures"},
			&cli.StringSliceFlag{Name: "trusted-key", Usage: "public key name:base64 (as in trusted-public-keys); with --deep, unsigned narinfos are problems"},
			&cli.BoolFlag{Name: "quarantine", Usage: "move narinfos whose NAR is missing to .kiss/quarantine/ (reversible: --restore)"},
			&cli.BoolFlag{Name: "restore", Usage: "put quarantined narinfos back (all, or the store paths given after STORE)"},
			durFlag(cli.DurationFlag{Name: "lock-wait", Value: defaultLockWait, Usage: "how long to wait while a prune holds the lease (--quarantine, --restore)"}),
			&cli.IntFlag{Name: "concurrency", Usage: "parallel reads (default: as prune)"},
			&cli.BoolFlag{Name: "no-save", Usage: "do not keep the report in the cache"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (same as the global --json)"},
		},
		Action: runVerify,
	})
}

func runVerify(c *cli.Context) error {
	if c.NArg() < 1 || (c.NArg() > 1 && !c.Bool("restore")) {
		return usageError(errors.New("verify: want exactly one STORE argument"))
	}
	if c.Bool("restore") && c.Bool("quarantine") {
		return usageError(errors.New("verify: --restore and --quarantine exclude each other"))
	}
	for _, k := range c.StringSlice("trusted-key") {
		if _, err := nixcache.ParsePublicKey(k); err != nil {
			return usageError(fmt.Errorf("--trusted-key %q: %w", k, err))
		}
	}
	st, err := openStore(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	defer st.Close()
	lock := verify.LockOptions{Wait: c.Duration("lock-wait"), Owner: "kiss verify"}
	if c.Bool("restore") {
		var hashes []nixcache.Hash
		if args := c.Args().Slice()[1:]; len(args) > 0 {
			if hashes, err = pathHashes(c.Context, st, args); err != nil { // in the cache's StoreDir, as rm and why
				return err
			}
		}
		restored, kept, err := verify.Restore(c.Context, st, hashes, lock)
		if err != nil {
			return withExit(verifyExitCode(err), err)
		}
		if jsonWanted(c) {
			return writeJSON(c.App.Writer, map[string]any{"restored": restored, "kept_in_quarantine": kept})
		}
		for _, k := range restored {
			fmt.Fprintf(c.App.Writer, "restored %s\n", k)
		}
		for _, k := range kept {
			fmt.Fprintf(c.App.Writer, "kept %s: %s\n", k.Key, k.Reason)
		}
		return nil
	}
	rep, err := verify.Run(c.Context, st, verify.RunOptions{
		Options: verify.Options{
			Deep:        c.Bool("deep"),
			TrustedKeys: c.StringSlice("trusted-key"),
			Concurrency: c.Int("concurrency"),
			Logger:      slog.Default(),
			Progress:    newProgress(c.App.ErrWriter),
		},
		Quarantine: c.Bool("quarantine"),
		Lock:       lock,
		Save:       !c.Bool("no-save"),
	})
	if rep == nil {
		if err != nil && errors.Is(err, nixcache.ErrInvalidStorePath) {
			return usageError(err)
		}
		return withExit(ExitStore, err)
	}
	for _, w := range rep.Warnings {
		slog.Warn(w)
	}
	if jsonWanted(c) {
		if werr := writeJSON(c.App.Writer, rep); werr != nil {
			return werr
		}
	} else {
		writeVerify(c, rep)
	}
	switch {
	case err != nil:
		return withExit(verifyExitCode(err), err)
	case !rep.OK():
		return &silentExit{ExitProblems}
	}
	return nil
}

func verifyExitCode(err error) int {
	switch {
	case lockproto.IsLocked(err):
		return ExitLocked
	case errors.Is(err, lockproto.ErrLeaseLost):
		return ExitLeaseLost
	}
	return ExitStore
}

func writeVerify(c *cli.Context, r *verify.Report) {
	w := c.App.Writer
	for _, p := range r.Problems {
		path := p.Path
		if path == "" {
			path = "-"
		}
		fmt.Fprintf(w, "%-18s %s %s: %s\n", p.Kind, p.Key, path, p.Detail)
	}
	what := "narinfos, NAR sizes and references"
	if r.Deep {
		what = "narinfos, NAR contents and references"
		if r.TrustedKeys > 0 {
			what += ", signatures"
		}
	}
	fmt.Fprintf(w, "checked %d narinfos (%s) in %.1fs: ", r.NarInfos, what, r.Elapsed)
	if r.OK() {
		fmt.Fprintln(w, "no problem found")
	} else {
		kinds := make([]string, 0, len(r.Counts))
		for k := range r.Counts {
			kinds = append(kinds, string(k))
		}
		sort.Strings(kinds)
		fmt.Fprintf(w, "%d problems:", len(r.Problems))
		for _, k := range kinds {
			fmt.Fprintf(w, " %s %d", k, r.Counts[verify.Kind(k)])
		}
		fmt.Fprintln(w)
	}
	for _, k := range r.Quarantined {
		fmt.Fprintf(w, "quarantined %s\n", k)
	}
	if r.InQuarantine > 0 {
		fmt.Fprintf(w, "%d narinfos in quarantine (.kiss/quarantine/; kiss verify --restore puts them back)\n", r.InQuarantine)
	}
}
