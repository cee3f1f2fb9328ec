package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/gctune"
	"github.com/kiss-cache/kiss/inventory"
	"github.com/kiss-cache/kiss/prune"
	"github.com/kiss-cache/kiss/storage"
)

func init() {
	register(&cli.Command{
		Name:      "prune",
		Usage:     "delete everything in a binary cache not reachable from a GC root",
		ArgsUsage: "STORE",
		Description: `Takes the exclusive prune lease (gcroots/.lock/prune), reads the roots
(markers under gcroots/, any depth, dot-names skipped; plus --roots), walks
their closures through References and Deriver, and deletes the rest:
narinfo, .ls, log/, realisations/, build-trace-v2/, debuginfo/ first, NARs
last, in batches, confirming the lease before every batch. Nothing younger
than --grace (on the store's clock) is deleted, and young narinfos count as
roots. nix-cache-info, gcroots/ and .kiss/ (except stale .kiss/tmp/) are
never touched. See docs/pruner.md.

EXIT STATUS
   0  success (or a dry run)
   2  bad arguments or store URL
   3  the store does not exist, cannot be reached or lacks what the lock
      needs; a delete failed
   4  refused, fail-closed: not a binary cache (a directory without
      nix-cache-info), roots unreadable (an entry under gcroots/ that is
      not a root), a marker naming no store path, a reachable narinfo
      unreadable or broken, missing references/NARs, or no roots; nothing
      was deleted
   5  another prune holds the lease and --lock-wait ran out
   6  the lease was lost while working; deletion stopped
 130  interrupted`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "roots", Usage: "extra root source: a store prefix (releases/) or a local directory (/path, ./path, file://)"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "plan only: take no lease, delete nothing, write nothing"},
			&cli.BoolFlag{Name: "list", Usage: "print every key that is (or in a dry run would be) deleted"},
			durFlag(cli.DurationFlag{Name: "grace", Value: gc.DefaultGrace, Usage: "keep everything younger than this on the store's clock"}),
			durFlag(cli.DurationFlag{Name: "root-max-age", Usage: "markers under gcroots/ older than this (e.g. 30d, 12h) stop counting and are deleted"}),
			durFlag(cli.DurationFlag{Name: "lock-wait", Value: 10 * time.Minute, Usage: "how long to wait for the prune lease"}),
			durFlag(cli.DurationFlag{Name: "lock-ttl", Value: 30 * time.Minute, Usage: "lease TTL (refreshed every TTL/6)"}),
			maxLockTTLFlag(),
			&cli.BoolFlag{Name: "allow-empty-roots", Usage: "allow a prune with no root at all (deletes everything older than --grace)"},
			&cli.BoolFlag{Name: "allow-dangling", Usage: "prune even if reachable paths name missing references or NARs"},
			&cli.BoolFlag{Name: "allow-empty-markers", Usage: "prune even if a marker names no store path or has lines that are not store paths (it then roots only the paths it names)"},
			&cli.BoolFlag{Name: "allow-no-cache-info", Usage: "prune a directory that has no nix-cache-info (by default it is refused as not a binary cache)"},
			&cli.IntFlag{Name: "concurrency", Usage: "parallel narinfo reads, at most 1024 (0: 2 per CPU, 4 to 8, on a local store; 64 otherwise)"},
			&cli.StringFlag{Name: "metrics-file", Usage: "write Prometheus metrics to this file (atomically; node_exporter textfile collector)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON on stdout (same as the global --json)"},
			&cli.BoolFlag{Name: "no-memo", Usage: "neither read nor write the closure memo (.kiss/memo/v2)"},
			&cli.StringFlag{Name: "temp-dir", Usage: "where the plan's temporary files go (about 100 bytes per object; default $TMPDIR or /tmp)"},
			&cli.IntFlag{Name: "list-pages", Usage: "S3 listing pages requested at once (default 16)"},
			&cli.StringFlag{Name: "inventory", Usage: "list below the top level from this S3 Inventory manifest (s3://DEST-BUCKET/…/manifest.json?region=…, CSV or Parquet); see docs/pruner.md"},
		},
		Action: runPrune,
	})
}

type pruneOutput struct {
	*gc.Report
	Deletions []gc.Deletion `json:"deletions,omitempty"`
	ExitCode  int           `json:"exit_code"`
}

func runPrune(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("prune: want exactly one STORE argument"))
	}
	maxAge := c.Duration("root-max-age")
	if maxAge < 0 {
		return usageError(errors.New("--root-max-age must not be negative"))
	}
	grace := c.Duration("grace")
	if grace < 0 {
		return usageError(errors.New("--grace must not be negative"))
	}
	if c.Duration("lock-ttl") > c.Duration("max-lock-ttl") {
		return usageError(fmt.Errorf("--lock-ttl %v exceeds --max-lock-ttl %v (a lease may not declare more)", c.Duration("lock-ttl"), c.Duration("max-lock-ttl")))
	}
	if c.Int("concurrency") < 0 || c.Int("concurrency") > gc.MaxConcurrency {
		return usageError(fmt.Errorf("--concurrency must be 0-%d", gc.MaxConcurrency))
	}
	log := slog.Default()
	if os.Getenv("GOGC") == "" {
		// The plan's live data is compact, pointer-free and long-lived while
		// the garbage (narinfo bodies) is small and short-lived: collecting
		// often keeps RSS near the live size for little CPU. (A soft memory
		// limit below the live size made the GC thrash: 10× slower at 1M.)
		defer gctune.Start(prune.GCPolicy)()
	}
	if grace < time.Hour {
		log.Warn("a grace period under 1h lets prune race uploads of writers that skip the lock", "grace", grace)
	}
	if grace == 0 {
		grace = -1 // gc: negative means none
	}
	ctx := c.Context
	st, err := openStore(ctx, c.Args().First())
	if err != nil {
		return err
	}
	defer st.Close()
	var dels []gc.Deletion
	opts := prune.Options{
		Options: gc.Options{
			RootSources:       c.StringSlice("roots"),
			Grace:             grace,
			RootMaxAge:        maxAge,
			Concurrency:       c.Int("concurrency"),
			AllowEmptyRoots:   c.Bool("allow-empty-roots"),
			AllowDangling:     c.Bool("allow-dangling"),
			AllowEmptyMarkers: c.Bool("allow-empty-markers"),
			NoMemo:            c.Bool("no-memo"),
			TempDir:           c.String("temp-dir"),
			ListPagesInFlight: c.Int("list-pages"),
			Logger:            log,
			Progress:          newProgress(c.App.ErrWriter),
		},
		DryRun:           c.Bool("dry-run"),
		AllowNoCacheInfo: c.Bool("allow-no-cache-info"),
		LockTTL:          c.Duration("lock-ttl"),
		MaxLockTTL:       c.Duration("max-lock-ttl"),
		LockWait:         c.Duration("lock-wait"),
		Owner:            "kiss prune",
	}
	if c.Bool("list") {
		opts.OnDeletion = func(d gc.Deletion) { dels = append(dels, d) }
	}
	if u := c.String("inventory"); u != "" {
		report, closeInv, err := openInventory(ctx, u, c.Args().First(), opts.TempDir)
		if err != nil {
			return err
		}
		defer closeInv()
		opts.Snapshot = report
	}
	rep, err := prune.Run(ctx, st, opts)
	code := ExitOK
	if err != nil {
		code = pruneExitCode(ctx, err)
	}
	return finishPrune(c, rep, dels, code, err)
}

// pruneExitCode is the documented exit code of a failed prune.
func pruneExitCode(ctx context.Context, err error) int {
	return map[prune.Failure]int{
		prune.FailStore:       ExitStore,
		prune.FailRefused:     ExitRefused,
		prune.FailLocked:      ExitLocked,
		prune.FailLeaseLost:   ExitLeaseLost,
		prune.FailInterrupted: ExitInterrupted,
		prune.FailUsage:       ExitUsage,
	}[prune.Classify(ctx, err)]
}

// finishPrune prints the report (human or JSON), writes the metrics file,
// and returns the exit.
func finishPrune(c *cli.Context, rep *gc.Report, dels []gc.Deletion, code int, runErr error) error {
	out := c.App.Writer
	if jsonWanted(c) {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(pruneOutput{Report: rep, Deletions: dels, ExitCode: code}); err != nil {
			return withExit(ExitFailure, err)
		}
	} else {
		for _, d := range dels {
			fmt.Fprintln(out, d.Key)
		}
		if runErr == nil || rep.Listed != nil {
			writeSummary(out, rep)
		}
	}
	if f := c.String("metrics-file"); f != "" {
		if err := writePruneMetrics(f, rep, code); err != nil {
			slog.Warn("cannot write metrics file", "file", f, "err", err)
			if code == ExitOK {
				code = ExitFailure
				runErr = err
			}
		}
	}
	if code == ExitOK {
		return nil
	}
	if jsonWanted(c) {
		// The JSON already carries the error; still say it on stderr.
		fmt.Fprintf(c.App.ErrWriter, "kiss: %v\n", runErr)
		return &silentExit{code}
	}
	return withExit(code, runErr)
}

// humanBytes is n in binary units ("4.2 KiB"), as everywhere in kiss's output.
func humanBytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func writeSummary(w io.Writer, r *gc.Report) {
	verb := "deleted"
	n := r.Deleted
	if r.DryRun {
		verb, n = "would delete", r.DeleteTotal
	}
	fmt.Fprintf(w, "store %s (store clock %s, grace %s)\n", r.Store, r.Now.UTC().Format(time.RFC3339), r.Grace)
	fmt.Fprintf(w, "roots: %d markers (%d expired), %d paths (%d not in cache), %d young narinfos\n",
		r.Roots.Markers, r.Roots.Expired, r.Roots.Paths, r.Roots.Missing, r.Roots.Young)
	fmt.Fprintf(w, "reachable: %d paths, %s of NARs; %d narinfos read, %d from memo\n",
		r.Reachable.Objects, humanBytes(r.Reachable.Bytes), r.NarInfoReads, r.Memo.Hits)
	kinds := make([]string, 0, len(r.Delete))
	for k := range r.Delete {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	if r.Error != "" && len(kinds) > 0 { // the plan's, not what was deleted
		fmt.Fprintln(w, "planned, before the run stopped:")
	}
	for _, k := range kinds {
		d := r.Delete[k]
		fmt.Fprintf(w, "  %-12s %8d objects %12s\n", k, d.Objects, humanBytes(d.Bytes))
	}
	fmt.Fprintf(w, "%s %d objects, %s in %.1fs\n", verb, n.Objects, humanBytes(n.Bytes), r.Elapsed)
	if r.MissingNARs > 0 || r.DanglingRefs > 0 {
		fmt.Fprintf(w, "missing: %d NARs and %d references of reachable paths are not in the cache\n", r.MissingNARs, r.DanglingRefs)
	}
	if r.LateNARs > 0 {
		fmt.Fprintf(w, "late: %d NARs of reachable paths were written while the store was listed (found by a stat, kept)\n", r.LateNARs)
	}
	if u := r.DeletedUncertain; u.Objects > 0 {
		fmt.Fprintf(w, "uncertain: %d objects, %s: a delete failed and a re-check could not tell whether they are gone\n", u.Objects, humanBytes(u.Bytes))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// writePruneMetrics writes the report as a Prometheus textfile, atomically
// (prometheus.WriteToTextfile writes a temp file and renames it).
func writePruneMetrics(file string, r *gc.Report, code int) error {
	reg := prometheus.NewRegistry()
	registerPruneMetrics(reg, r, code)
	return prometheus.WriteToTextfile(file, reg)
}

// registerPruneMetrics registers the report's metrics with reg: every
// metric kiss prune exports (docs/grafana-dashboard.json is checked against
// them).
func registerPruneMetrics(reg prometheus.Registerer, r *gc.Report, code int) {
	gauge := func(name, help string, v float64) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiss_prune_" + name, Help: help})
		g.Set(v)
		reg.MustRegister(g)
	}
	vec := func(name, help, label string, vals map[string]float64) {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiss_prune_" + name, Help: help}, []string{label})
		for k, v := range vals {
			g.WithLabelValues(k).Set(v)
		}
		reg.MustRegister(g)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge("success", "1 if the last prune succeeded", b2f(code == 0))
	gauge("exit_code", "exit status of the last prune", float64(code))
	gauge("dry_run", "1 if the last prune was a dry run", b2f(r.DryRun))
	gauge("last_run_timestamp_seconds", "when the last prune finished (host clock)", float64(time.Now().Unix()))
	gauge("duration_seconds", "wall time of the last prune", r.Elapsed)
	gauge("reachable_paths", "store paths reachable from the roots", float64(r.Reachable.Objects))
	gauge("reachable_bytes", "sum of FileSize of reachable paths", float64(r.Reachable.Bytes))
	gauge("narinfo_reads", "narinfos read (not served from the memo)", float64(r.NarInfoReads))
	gauge("memo_hits", "narinfos served from the closure memo", float64(r.Memo.Hits))
	gauge("deleted_objects", "objects deleted by the last prune", float64(r.Deleted.Objects))
	gauge("deleted_bytes", "bytes deleted by the last prune", float64(r.Deleted.Bytes))
	gauge("deleted_uncertain_objects", "objects of failed deletes whose fate a re-check could not learn", float64(r.DeletedUncertain.Objects))
	vec("integrity_problems", "reachable paths' references and NARs not in the cache (the prune refuses unless --allow-dangling)", "problem", map[string]float64{
		"dangling_references": float64(r.DanglingRefs), "missing_nars": float64(r.MissingNARs),
	})
	gauge("late_nars", "NARs of reachable paths the listing missed but a stat found (written while the store was listed); kept", float64(r.LateNARs))
	vec("roots", "root markers by state", "state", map[string]float64{
		"counted": float64(r.Roots.Markers), "expired": float64(r.Roots.Expired),
		"missing_paths": float64(r.Roots.Missing), "young_narinfos": float64(r.Roots.Young),
	})
	count := func(m map[string]gc.Count, bytes bool) map[string]float64 {
		out := map[string]float64{}
		for k, c := range m {
			if bytes {
				out[k] = float64(c.Bytes)
			} else {
				out[k] = float64(c.Objects)
			}
		}
		return out
	}
	vec("listed_objects", "objects in the store by kind", "kind", count(r.Listed, false))
	if !r.ListedBytesPartial { // a keys-only listing (file://) does not know them
		vec("listed_bytes", "bytes in the store by kind", "kind", count(r.Listed, true))
	}
	vec("planned_delete_objects", "objects planned for deletion by kind", "kind", count(r.Delete, false))
	vec("planned_delete_bytes", "bytes planned for deletion by kind", "kind", count(r.Delete, true))
	vec("phase_seconds", "time per phase", "phase", r.Phases)
	req := map[string]float64{}
	for k, v := range r.Requests {
		req[k] = float64(v)
	}
	vec("storage_requests", "storage requests by type", "type", req)
}

// openInventory opens the S3 Inventory manifest at rawURL for the cache at
// cacheURL: a report of another bucket is refused (exit 2).
func openInventory(ctx context.Context, rawURL, cacheURL, tempDir string) (*inventory.Report, func(), error) {
	report, closeInv, err := inventory.OpenURL(ctx, rawURL, func(ctx context.Context, u string) (storage.Store, error) { return openStore(ctx, u) }, tempDir)
	if err != nil {
		var ex cli.ExitCoder
		switch {
		case errors.As(err, &ex):
			return nil, nil, err // openStore's own exit
		case errors.Is(err, inventory.ErrURL):
			return nil, nil, usageError(fmt.Errorf("--inventory: %w", err))
		case errors.Is(err, inventory.ErrInvalid), errors.Is(err, storage.ErrNotFound), errors.Is(err, os.ErrNotExist):
			return nil, nil, withExit(ExitRefused, fmt.Errorf("--inventory: %w", err))
		}
		return nil, nil, withExit(ExitStore, fmt.Errorf("--inventory: %w", err))
	}
	if u, err := url.Parse(cacheURL); err == nil && u.Scheme == "s3" && u.Host != report.Manifest().SourceBucket {
		closeInv()
		return nil, nil, usageError(fmt.Errorf("--inventory: the report is of bucket %q, the cache is %q", report.Manifest().SourceBucket, u.Host))
	}
	return report, closeInv, nil
}
