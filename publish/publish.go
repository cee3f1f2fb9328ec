package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// What went wrong, for the caller to decide on (an exit code). Every error
// Root returns matches exactly one of them, or is a *CommandFailedError.
var (
	// ErrInvalid: the marker name, a store path or Keep is not acceptable
	// (checked before any lease; nothing was run or written).
	ErrInvalid = errors.New("invalid root")
	// ErrStore: the store cannot be used (unreachable, no conditional
	// writes, gcroots not a directory, refused us) or the marker write failed.
	ErrStore = errors.New("store unusable")
	// ErrLocked: a prune held the lock and Lease.Wait ran out (nothing ran).
	ErrLocked = errors.New("locked by a prune")
	// ErrLeaseLost: the writer lease was lost while the command ran or the
	// marker was written; no marker was written by this call.
	ErrLeaseLost = errors.New("writer lease lost")
	// ErrInterrupted: the caller's context ended; no marker was written.
	ErrInterrupted = errors.New("interrupted")
	// ErrCommand: the command could not be run (it returned an error, not
	// an exit status); no marker.
	ErrCommand = errors.New("command did not run")
)

// CommandFailedError: the command ran and exited with a status other than 0;
// no marker was written.
type CommandFailedError struct{ Status int }

func (e *CommandFailedError) Error() string {
	return fmt.Sprintf("command exited with status %d; no marker written", e.Status)
}

// failure tags an error with its kind without changing its message.
type failure struct{ kind, err error }

func (f *failure) Error() string   { return f.err.Error() }
func (f *failure) Unwrap() []error { return []error{f.kind, f.err} }

func fail(kind, err error) error { return &failure{kind: kind, err: err} }

// Options say what to root and how to take the lease.
type Options struct {
	// Name is the marker's name: "web1", "ci/main" or "gcroots/web1".
	Name string
	// Paths are the store paths the marker names, in the cache's StoreDir
	// (a path below a store path roots that store path).
	Paths []string
	// Keep keeps the marker's last Keep values as generations
	// (roots.AddKeeping); 0 keeps no history.
	Keep int
	// Job names the writer lease (default: Name, made a job name by
	// lockproto.SanitizeJob).
	Job string
	// Lease configures the writer lease (TTL, MaxTTL, Wait, Owner);
	// its Logger defaults to Logger.
	Lease lockproto.Options
	// Command, when set, runs under the lease before the marker is
	// written; ctx is the lease's context, cancelled when the lease is
	// lost or the caller's context ends, and the command must stop then.
	// It returns the exit status of what it ran (0: success), or an error
	// if it could not run it. When Command is nil, the paths are expected
	// to be in the cache already: each one that is not is logged and
	// listed in Result.Missing (the marker is written anyway).
	Command func(ctx context.Context) (status int, err error)
	// Logger receives warnings; slog.Default() when nil.
	Logger *slog.Logger
}

// Result is what Root wrote.
type Result struct {
	Key      string         // the marker's key, gcroots/NAME
	StoreDir string         // the cache's store directory
	Marker   storage.Object // the marker as written
	Trimmed  []string       // generations deleted beyond Keep
	Missing  []string       // paths whose narinfo is not in the cache (only without Command)
}

// Root writes the marker Options.Name naming Options.Paths under a writer
// lease, after running Options.Command under the same lease if there is one,
// and only if it exited 0 and the lease was confirmed after it (see the
// package doc). The lease is always released.
func Root(ctx context.Context, st storage.Store, o Options) (Result, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	var res Result
	key, err := check(o)
	if err != nil {
		return res, fail(ErrInvalid, err)
	}
	res.Key = key
	if res.StoreDir, err = storeDir(ctx, st); err != nil {
		return res, fail(ErrStore, err)
	}
	for _, p := range o.Paths {
		if _, _, err := nixcache.ParseStorePath(p, res.StoreDir); err != nil {
			return res, fail(ErrInvalid, fmt.Errorf("store path %q: %w", p, err))
		}
	}
	if o.Command == nil {
		res.Missing = missing(ctx, st, o.Paths, res.StoreDir, log)
	}

	job := o.Job
	if job == "" {
		job = lockproto.SanitizeJob(strings.ReplaceAll(strings.TrimPrefix(key, nixcache.RootsPrefix), "/", "-"))
	}
	lo := o.Lease
	if lo.Logger == nil {
		lo.Logger = log
	}
	lease, err := lockproto.AcquireWriter(ctx, st, job, lo)
	if err != nil {
		switch {
		case lockproto.IsLocked(err):
			return res, fail(ErrLocked, err)
		case ctx.Err() != nil:
			return res, fail(ErrInterrupted, err)
		}
		return res, fail(ErrStore, err)
	}
	defer func() { _ = lease.Release(ctx) }() // released below on success; best effort otherwise
	lctx := lease.Context()

	if o.Command != nil {
		if err := runCommand(ctx, lease, o.Command); err != nil {
			return res, err
		}
	}
	res.Marker, res.Trimmed, err = roots.AddKeeping(lctx, st, key, o.Paths, res.StoreDir, o.Keep)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return res, fail(ErrInterrupted, fmt.Errorf("marker %s not written: %w", key, err))
		case lease.Err() != nil:
			return res, fail(ErrLeaseLost, fmt.Errorf("marker %s not written: %w", key, err))
		}
		return res, fail(ErrStore, fmt.Errorf("writing marker %s: %w", key, err))
	}
	if err := lease.Release(ctx); err != nil {
		log.Warn("releasing the writer lease failed; it goes stale by itself", "err", err)
	}
	return res, nil
}

// check refuses, before anything is read, what no store could accept.
func check(o Options) (string, error) {
	key, err := roots.WritableKey(o.Name)
	if err != nil {
		return "", err
	}
	if len(o.Paths) == 0 {
		return "", fmt.Errorf("root %s: no store paths given", o.Name)
	}
	if o.Keep < 0 {
		return "", fmt.Errorf("keep %d: want 0 (no history) or a number of values to keep", o.Keep)
	}
	return key, nil
}

// storeDir reads the cache's store directory, so the paths can be checked
// against it, and refuses a gcroots that no marker could be written under.
func storeDir(ctx context.Context, st storage.Store) (string, error) {
	dir, err := roots.StoreDir(ctx, st)
	if err != nil {
		return "", err
	}
	return dir, roots.CheckDir(ctx, st)
}

// missing lists the paths whose narinfo the cache does not have (a marker
// naming them keeps nothing yet; it is written anyway, for a push to come).
func missing(ctx context.Context, st storage.Store, paths []string, storeDir string, log *slog.Logger) []string {
	var out []string
	for _, p := range paths {
		key, err := nixcache.NarInfoKeyFor(p, storeDir)
		if err != nil {
			continue // checked by the caller
		}
		if _, err := st.Stat(ctx, key); errors.Is(err, storage.ErrNotFound) {
			log.Warn("store path is not in the cache (marker written anyway)", "path", p)
			out = append(out, p)
		}
	}
	return out
}

// runCommand runs the command under the lease and applies the fencing
// rules: it returns nil only if the command exited 0, the caller was not
// interrupted, and the lease was confirmed afterwards.
func runCommand(ctx context.Context, lease *lockproto.Lease, command func(context.Context) (int, error)) error {
	status, err := command(lease.Context())
	if err != nil {
		return fail(ErrCommand, err)
	}
	// A lease lost while the command ran makes its work suspect even if it
	// succeeded: a prune may have judged the lease stale meanwhile. (When
	// the caller's context ended, the lease's context ended with it: that
	// is an interruption, not a loss.)
	if lerr := lease.Err(); lerr != nil && ctx.Err() == nil {
		return fail(ErrLeaseLost, fmt.Errorf("lease lost while the command ran; no marker written: %w", lerr))
	}
	if status != 0 {
		return &CommandFailedError{Status: status}
	}
	if ctx.Err() != nil {
		return fail(ErrInterrupted, errors.New("interrupted; no marker written"))
	}
	// Fencing: the marker lands only under a lease confirmed just now.
	if err := lease.Confirm(ctx); err != nil {
		return fail(ErrLeaseLost, fmt.Errorf("no marker written: %w", err))
	}
	return nil
}
