package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/reportpage"
)

func init() {
	register(&cli.Command{
		Name:      "report",
		Usage:     "render a static HTML page of the cache: roots and their sizes, last prunes, a size chart, verify's problems",
		ArgsUsage: "STORE",
		Description: `Renders one self-contained HTML file (no script, nothing loaded from
elsewhere: it works offline) from the store alone: each root's closure,
unique and shared sizes (as kiss du), the last prunes and a chart of kept
and freed bytes over time (from the reports each prune keeps in
.kiss/reports/), and the problems the last kiss verify found.

By default the page goes into the store as index.html, where nginx or the
bucket serves it; --output FILE writes it to a file instead (- for stdout).
--key may not name an object of the cache itself (a narinfo, a NAR, a log,
a marker under gcroots/, nix-cache-info, .kiss/, a *.tmp file).

EXIT STATUS
   0  success
   2  bad arguments or store URL
   3  the store cannot be read or written
   4  the roots cannot be read (as prune would refuse)`,
		Flags: append(rootFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the page to FILE (- for stdout) instead of the store"},
			&cli.StringFlag{Name: "key", Value: reportpage.DefaultKey, Usage: "store key of the page"},
			&cli.IntFlag{Name: "prunes", Value: 20, Usage: "how many of the last prunes to list"},
		),
		Action: runReport,
	})
}

func runReport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("report: want exactly one STORE argument"))
	}
	if err := reportpage.CheckKey(c.String("key")); err != nil {
		return usageError(fmt.Errorf("--key: %w", err))
	}
	if n := c.Int("prunes"); n < 1 {
		return usageError(fmt.Errorf("--prunes %d: want at least 1", n))
	}
	st, opts, err := openForRoots(c)
	if err != nil {
		return err
	}
	defer st.Close()
	page, err := reportpage.Build(c.Context, st, reportpage.Options{Roots: opts, Prunes: c.Int("prunes")})
	if err != nil {
		return viewError(err)
	}
	switch out := c.String("output"); out {
	case "":
		o, err := reportpage.Publish(c.Context, st, c.String("key"), page)
		if err != nil {
			return withExit(ExitStore, err)
		}
		fmt.Fprintf(c.App.Writer, "wrote %s (%d bytes)\n", o.Key, len(page))
	case "-":
		_, err = c.App.Writer.Write(page)
		return err
	default:
		if err := os.WriteFile(out, page, 0o644); err != nil {
			return withExit(ExitFailure, err)
		}
	}
	return nil
}
