package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

func init() {
	ttlFlag := durFlag(cli.DurationFlag{Name: "lock-ttl", Value: lockproto.DefaultTTL, Usage: "judge staleness with this TTL (a lease's own declared TTL wins if longer, up to --max-lock-ttl)"})
	register(&cli.Command{
		Name:  "locks",
		Usage: "inspect or break the leases under gcroots/.lock/",
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				Usage:     "who holds which lease, since when, refreshed how long ago (store clock)",
				ArgsUsage: "STORE",
				Flags:     []cli.Flag{ttlFlag, maxLockTTLFlag(), &cli.BoolFlag{Name: "json", Usage: "JSON output (same as the global --json)"}},
				Action:    runLocksList,
			},
			{
				Name:      "break",
				Usage:     "delete stale leases (all stale ones, or the NAMEs given); --force also fresh NAMEs",
				ArgsUsage: "STORE [NAME...]",
				Description: `A lease is stale when it was not refreshed for its TTL on the store's clock;
its holder stopped working at TTL/2. Breaking a fresh lease (--force, names
only) makes its holder stop at its next refresh, but work it does until then
is unprotected: use it only for a holder you know is dead.

EXIT STATUS:
   0  done
   1  a named lease is fresh (use --force), changed meanwhile, does not
      exist, or could not be read or deleted
   2  usage
   3  the store cannot be opened or reached`,
				Flags:  []cli.Flag{ttlFlag, maxLockTTLFlag(), &cli.BoolFlag{Name: "force", Usage: "break the named leases even if fresh"}},
				Action: runLocksBreak,
			},
		},
	})
}

func locksOpen(c *cli.Context, nargs int) (storage.Store, error) {
	if c.NArg() < nargs {
		return nil, usageError(fmt.Errorf("want STORE%s", map[bool]string{true: " NAME...", false: ""}[nargs > 1]))
	}
	return openStore(c.Context, c.Args().First())
}

func runLocksList(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("locks list: want STORE"))
	}
	st, err := locksOpen(c, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	hs, err := lockproto.List(c.Context, st, judging(c))
	if err != nil {
		return withExit(ExitStore, err)
	}
	w := c.App.Writer
	if jsonWanted(c) {
		type row struct {
			lockproto.Holder
			AgeSeconds   float64 `json:"age_seconds"`
			AheadSeconds float64 `json:"ahead_seconds,omitempty"`
		}
		rows := make([]row, len(hs))
		for i, h := range hs {
			rows[i] = row{h, h.Age.Seconds(), h.Ahead.Seconds()}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(hs) == 0 {
		fmt.Fprintln(w, "no leases")
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSTATE\tREFRESHED\tOWNER\tHOST\tPID\tCREATED (holder clock)")
	for _, h := range hs {
		state := "fresh"
		if h.Stale {
			state = "stale"
		}
		if h.TTLCapped {
			state += " (ttl " + h.Record.TTL + " capped)"
		}
		owner, host, pid, created := "?", "?", "?", "?"
		if r := h.Record; r != nil {
			owner, host, pid, created = r.Owner, r.Host, fmt.Sprint(r.PID), r.Created.UTC().Format(time.RFC3339)
		}
		name := h.Key[len(lockproto.LockPrefix):]
		refreshed := h.Age.Round(time.Second).String() + " ago"
		if h.Ahead > 0 {
			// Fresh until the store's clock catches up: say so, or the
			// lease looks like one refreshed a moment ago.
			refreshed = h.Ahead.Round(time.Second).String() + " AHEAD of the store clock"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Kind, name, state, refreshed, owner, host, pid, created)
	}
	return tw.Flush()
}

func runLocksBreak(c *cli.Context) error {
	st, err := locksOpen(c, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, j, force := c.Context, judging(c), c.Bool("force")
	names := c.Args().Tail()
	if force && len(names) == 0 {
		return usageError(errors.New("locks break: --force needs the NAMEs of the leases to break"))
	}
	w := c.App.Writer
	if len(names) == 0 {
		hs, err := lockproto.List(ctx, st, j)
		if err != nil {
			return withExit(ExitStore, err)
		}
		n := 0
		for _, h := range hs {
			if !h.Stale {
				continue
			}
			if _, err := lockproto.Break(ctx, st, h.Key, j, false); err != nil {
				fmt.Fprintf(w, "kept %s: %v\n", h.Key, err)
				continue
			}
			n++
			fmt.Fprintf(w, "broke %s\n", h)
		}
		fmt.Fprintf(w, "%d stale lease(s) broken, %d lease(s) in all\n", n, len(hs))
		return nil
	}
	var failed error
	for _, name := range names {
		h, err := lockproto.Break(ctx, st, name, j, force)
		switch {
		case err == nil:
			fmt.Fprintf(w, "broke %s\n", h)
		case errors.Is(err, storage.ErrInvalidKey):
			return usageError(err)
		case errors.Is(err, storage.ErrNotFound):
			failed = errors.Join(failed, fmt.Errorf("%s: no such lease", name))
		default:
			failed = errors.Join(failed, err)
		}
	}
	return failed
}

// maxLockTTLFlag is --max-lock-ttl, for every command that judges leases.
func maxLockTTLFlag() *durationFlag {
	return durFlag(cli.DurationFlag{
		Name: "max-lock-ttl", Value: lockproto.DefaultMaxTTL, EnvVars: []string{"KISS_MAX_LOCK_TTL"},
		Usage: "the longest TTL a lease may declare: a lease declaring more is judged as if it declared this, and --lock-ttl may not exceed it (use one value on every host)",
	})
}

// judging is how a locks command judges leases: --lock-ttl, --max-lock-ttl.
func judging(c *cli.Context) lockproto.Judging {
	return lockproto.Judging{TTL: c.Duration("lock-ttl"), MaxTTL: c.Duration("max-lock-ttl")}
}
