package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/publish"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

func init() {
	register(&cli.Command{
		Name:  "roots",
		Usage: "the root registry: markers under gcroots/ that keep store paths (and their closures) alive",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "write marker gcroots/NAME naming STORE-PATHs (atomic; replaces an existing marker)",
				ArgsUsage: "STORE NAME STORE-PATH...",
				Description: `Takes a writer lease (so no prune runs while the marker lands), writes the
marker in one atomic put, releases the lease. Paths not in the cache are
written anyway, with a warning.

--keep N keeps the marker's last N values: its current value first becomes a
generation, gcroots/NAME~<n> (n counting up), then generations beyond the
newest N-1 are deleted. The pruner keeps what every generation names, and a
generation ages with its marker (--root-max-age). Names ending in ~<n> are
reserved for generations.`,
				Flags: []cli.Flag{
					durFlag(cli.DurationFlag{Name: "lock-wait", Value: 10 * time.Minute, Usage: "how long to wait while a prune holds the lease"}),
					&cli.IntFlag{Name: "keep", Usage: "keep the marker's last N values as generations NAME~<n> (0: no history kept or trimmed)"},
				},
				Action: runRootsAdd,
			},
			{
				Name:      "list",
				Usage:     "list markers with their age and closure size",
				ArgsUsage: "STORE",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "roots", Usage: "extra root source, as for prune"},
					&cli.BoolFlag{Name: "json", Usage: "JSON output (same as the global --json)"},
					durFlag(cli.DurationFlag{Name: "root-max-age", Usage: "flag markers older than this as expired (as prune would)"}),
				},
				Action: runRootsList,
			},
			{
				Name:      "rm",
				Usage:     "delete markers gcroots/NAME...",
				ArgsUsage: "STORE NAME...",
				Description: `Deletes each marker, only as the version it finds (one rewritten meanwhile
stays). A NAME with no marker is reported; the others are still removed.
What only a removed marker kept goes with the next prune.

EXIT STATUS
   0  every marker removed
   1  a NAME has no marker (the others were removed)
   2  bad arguments (a NAME the pruner would not read as a marker) or store URL
   3  the store cannot be read, or a delete failed`,
				Action: runRootsRm,
			},
		},
	})
}

func runRootsAdd(c *cli.Context) error {
	if c.NArg() < 3 {
		return usageError(errors.New("roots add: want STORE NAME STORE-PATH…"))
	}
	name, paths := c.Args().Get(1), c.Args().Slice()[2:]
	if _, err := roots.WritableKey(name); err != nil {
		return usageError(err) // before the store is opened: a usage error whatever the store says
	}
	st, err := openStore(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := publish.Root(c.Context, st, publish.Options{
		Name: name, Paths: paths, Keep: c.Int("keep"), Job: "roots-add",
		Lease:  lockproto.Options{Wait: c.Duration("lock-wait"), Owner: "kiss roots add " + name},
		Logger: slog.Default(),
	})
	if err != nil {
		return publishError("roots add", err)
	}
	if jsonWanted(c) {
		return json.NewEncoder(c.App.Writer).Encode(map[string]any{"key": res.Marker.Key, "paths": paths, "mtime": res.Marker.ModTime, "trimmed_generations": res.Trimmed})
	}
	fmt.Fprintf(c.App.Writer, "%s: %d store paths\n", res.Marker.Key, len(paths))
	for _, k := range res.Trimmed {
		fmt.Fprintf(c.App.Writer, "removed old generation %s\n", k)
	}
	return nil
}

func runRootsList(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("roots list: want exactly one STORE argument"))
	}
	maxAge := c.Duration("root-max-age")
	if maxAge < 0 {
		return usageError(errors.New("--root-max-age must not be negative"))
	}
	st, err := openStore(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	defer st.Close()
	infos, err := gc.ListRoots(c.Context, st, gc.Options{RootSources: c.StringSlice("roots"), RootMaxAge: maxAge, Logger: slog.Default(), Progress: newProgress(c.App.ErrWriter)})
	if err != nil {
		if errors.Is(err, gc.ErrRootsUnavailable) || errors.Is(err, gc.ErrIntegrity) {
			return withExit(ExitRefused, err)
		}
		return withExit(ExitStore, err)
	}
	// A listing comes in no particular order (S3 pages, parallel reads):
	// sort, so two runs print alike; a marker's generations follow it,
	// newest first.
	slices.SortStableFunc(infos, func(a, b gc.RootInfo) int {
		am, an, _ := generationOf(a.Source)
		bm, bn, _ := generationOf(b.Source)
		if c := strings.Compare(am, bm); c != 0 {
			return c
		}
		return cmpGeneration(an, bn)
	})
	if jsonWanted(c) {
		type row struct {
			gc.RootInfo
			Paths        []string `json:"paths"`
			GenerationOf string   `json:"generation_of,omitempty"`
			Generation   int      `json:"generation,omitempty"`
		}
		rows := make([]row, len(infos))
		for i, r := range infos {
			rows[i] = row{RootInfo: r, Paths: hashes(r.Paths)}
			if m, n, ok := generationOf(r.Source); ok {
				rows[i].GenerationOf, rows[i].Generation = m, n
			}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MARKER\tAGE\tPATHS\tCLOSURE\tSIZE\tNOTE")
	for _, r := range infos {
		var notes []string
		if r.Expired {
			notes = append(notes, "expired")
		}
		if r.Problem != "" {
			notes = append(notes, r.Problem+" (prune refuses to run)")
		}
		if r.Link != "" {
			notes = append(notes, "-> "+r.Link)
		}
		if r.Missing > 0 {
			notes = append(notes, fmt.Sprintf("%d missing", r.Missing))
		}
		if m, n, ok := generationOf(r.Source); ok {
			notes = append(notes, fmt.Sprintf("generation %d of %s", n, m))
		}
		note := strings.Join(notes, "; ")
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Source, shortAge(time.Duration(r.Age)), len(r.Paths), r.ClosurePaths, humanBytes(int64(r.ClosureBytes)), note)
	}
	return tw.Flush()
}

// generationOf splits a generation's key (nixcache.ParseGenerationKey); for
// any other marker it returns the key itself and ok false.
func generationOf(key string) (marker string, n int, ok bool) {
	if m, n, ok := nixcache.ParseGenerationKey(key); ok {
		return m, n, true
	}
	return key, 0, false
}

// cmpGeneration orders a marker (0) before its generations, newest first.
func cmpGeneration(a, b int) int {
	switch {
	case a == b:
		return 0
	case a == 0:
		return -1
	case b == 0:
		return 1
	}
	return b - a
}

func hashes(hs []nixcache.Hash) []string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return s
}

func shortAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

func runRootsRm(c *cli.Context) error {
	if c.NArg() < 2 {
		return usageError(errors.New("roots rm: want STORE NAME…"))
	}
	for _, n := range c.Args().Slice()[1:] {
		if _, err := roots.Key(n); err != nil {
			return usageError(err)
		}
	}
	st, err := openStore(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	defer st.Close()
	var errs []error
	code := ExitOK
	removed := []string{}
	for _, n := range c.Args().Slice()[1:] {
		key, _ := roots.Key(n)
		err := roots.Remove(c.Context, st, n)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			errs = append(errs, fmt.Errorf("%s: no such marker", key))
			if code == ExitOK {
				code = ExitFailure
			}
			continue
		case err != nil:
			errs = append(errs, err)
			code = ExitStore
			continue
		}
		removed = append(removed, key)
		if !jsonWanted(c) {
			fmt.Fprintf(c.App.Writer, "removed %s\n", key)
		}
	}
	if jsonWanted(c) {
		if err := writeJSON(c.App.Writer, map[string]any{"removed": removed}); err != nil {
			return err
		}
	}
	return withExit(code, errors.Join(errs...))
}
