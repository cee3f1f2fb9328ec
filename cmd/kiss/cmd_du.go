package main

import (
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/explain"
	"github.com/kiss-cache/kiss/gc"
)

func init() {
	register(&cli.Command{
		Name:      "du",
		Usage:     "what each root keeps alive: closure size, bytes only it keeps, bytes shared with other roots",
		ArgsUsage: "STORE",
		Description: `For every root marker (and, as one row, the narinfos younger than --grace,
which the pruner counts as roots): its closure (paths and NAR bytes, through
References and Deriver, as the pruner walks it), the part of it no other root
keeps — what deleting the marker would let the next prune free — and the
part it shares. Sizes are NAR FileSize sums. Uses the pruner's closure memo:
a warm run reads no narinfo.

EXIT STATUS
   0  success
   2  bad arguments or store URL
   3  the store cannot be read
   4  the roots cannot be read (as prune would refuse)`,
		Flags: append(rootFlags(),
			&cli.IntFlag{Name: "top", Usage: "show only the N largest roots (0: all)"},
			&cli.StringFlag{Name: "sort", Value: "closure", Usage: "order rows by closure, unique or name"},
			&cli.BoolFlag{Name: "json", Usage: "JSON output (same as the global --json)"},
		),
		Action: runDu,
	})
}

func runDu(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("du: want exactly one STORE argument"))
	}
	if c.Int("top") < 0 {
		return usageError(errors.New("--top must not be negative"))
	}
	order, ok := map[string]func(a, b explain.RootUsage) bool{
		"closure": func(a, b explain.RootUsage) bool { return a.Closure.Bytes > b.Closure.Bytes },
		"unique":  func(a, b explain.RootUsage) bool { return a.Unique.Bytes > b.Unique.Bytes },
		"name":    func(a, b explain.RootUsage) bool { return a.Root < b.Root },
	}[c.String("sort")]
	if !ok {
		return usageError(fmt.Errorf("--sort %q: want closure, unique or name", c.String("sort")))
	}
	st, opts, err := openForRoots(c)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := gc.NewView(c.Context, st, opts)
	if err != nil {
		return viewError(err)
	}
	defer v.Close()
	u, err := explain.Usage(v)
	if err != nil {
		return err
	}
	slices.SortStableFunc(u.Roots, func(a, b explain.RootUsage) int {
		switch {
		case order(a, b):
			return -1
		case order(b, a):
			return 1
		}
		return 0
	})
	if n := c.Int("top"); n > 0 && n < len(u.Roots) {
		u.Roots = u.Roots[:n]
	}
	if jsonWanted(c) {
		return writeJSON(c.App.Writer, u)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CLOSURE\tPATHS\tUNIQUE\tPATHS\tSHARED\t ROOT")
	for _, r := range u.Roots {
		note := ""
		if r.Expired {
			note = " (expired: keeps nothing)"
		}
		if r.Missing > 0 {
			note += fmt.Sprintf(" (%d paths not in the cache)", r.Missing)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t %s%s\n", humanBytes(int64(r.Closure.Bytes)), r.Closure.Paths,
			humanBytes(int64(r.Unique.Bytes)), r.Unique.Paths, humanBytes(int64(r.Shared.Bytes)), r.Root, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "kept: %d paths, %s; not kept by any root: %d narinfos\n", u.Kept.Paths, humanBytes(int64(u.Kept.Bytes)), u.Unkept)
	return nil
}
