package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	_ "github.com/kiss-cache/kiss/gateway" // registers http:// and https:// stores
	"github.com/kiss-cache/kiss/storage"
)

func init() {
	register(&cli.Command{
		Name:  "storage",
		Usage: "inspect a store",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "prove that a store honours the guarantees the lock protocol needs",
			ArgsUsage: "STORE",
			Description: `Writes, races and deletes probe objects under .kiss/check/<random>/ (always
removed again) to check: read-after-write, list-after-write, create-if-absent
(a second create gets 412), a concurrent create race with exactly one winner,
If-Match (stale 412, current ok), conditional delete, and the clock skew
between this host and the store (warn above 1m, fail above 5m).

Store calls that fail transiently (5xx, throttling, connection resets,
timeouts) are retried. A guarantee the store still could not be probed for
is "undecided": that is not a missing guarantee, and the check exits 7.

EXIT STATUS
   0  every required guarantee holds
   2  bad arguments or store URL
   3  the store cannot be reached, or lacks a required guarantee (named on stderr)
   7  could not decide: the store kept answering with transient errors (retry later)
 130  interrupted (SIGINT/SIGTERM)`,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "race-writers", Value: 8, Usage: "concurrent writers in the create race"},
				&cli.IntFlag{Name: "race-rounds", Value: 3, Usage: "rounds of the create race"},
			},
			Action: runStorageCheck,
		}},
	})
}

func runStorageCheck(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("storage check: want exactly one STORE argument"))
	}
	if c.Int("race-writers") < 2 || c.Int("race-rounds") < 1 {
		return usageError(errors.New("storage check: --race-writers must be ≥ 2 and --race-rounds ≥ 1"))
	}
	st, err := openStoreRetrying(c.Context, c.Args().First())
	if err != nil {
		if storage.IsTransient(err) {
			return withExit(ExitTransient, fmt.Errorf("could not decide: transient errors opening the store: %w", err))
		}
		return err
	}
	defer st.Close()
	rep := storage.Check(c.Context, st, storage.CheckOptions{
		RaceWriters: c.Int("race-writers"),
		RaceRounds:  c.Int("race-rounds"),
	})
	out := c.App.Writer
	if jsonWanted(c) {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			storage.CheckReport
			OK        bool     `json:"ok"`
			Failed    []string `json:"failed"`
			Undecided []string `json:"undecided"`
		}{rep, rep.OK(), rep.Failed(), rep.Undecided()}); err != nil {
			return err
		}
	} else {
		fmt.Fprint(out, rep.String())
	}
	if c.Context.Err() != nil {
		return withExit(ExitInterrupted, c.Context.Err())
	}
	// A guarantee shown missing outweighs others left undecided.
	if failed := rep.Failed(); len(failed) > 0 {
		return withExit(ExitStore, fmt.Errorf("store %s lacks required guarantees: %s", st.URL(), strings.Join(failed, ", ")))
	}
	if undecided := rep.Undecided(); len(undecided) > 0 {
		return withExit(ExitTransient, fmt.Errorf("store %s: could not decide: transient errors (retry later) while probing %s", st.URL(), strings.Join(undecided, ", ")))
	}
	return nil
}

// openStoreRetrying opens a store like openStore, trying again (three
// times in all, a second apart) when opening fails transiently: an S3
// store's open is a HeadBucket, which a flaky endpoint may refuse.
func openStoreRetrying(ctx context.Context, rawURL string) (storage.Store, error) {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(time.Second):
			}
		}
		var st storage.Store
		if st, err = openStore(ctx, rawURL); err == nil || !storage.IsTransient(err) {
			return st, err
		}
	}
	return nil, err
}
