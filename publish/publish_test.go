package publish_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/publish"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// The fencing rules of the package doc, each on an in-memory store with the
// real lease protocol. Tests that need a lease to lapse run in a synctest
// bubble (fake time: a TTL of a minute costs nothing).

const (
	pathA = "/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a"
	pathB = "/nix/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-b"
	pathC = "/nix/store/11111111111111111111111111111111-c"
	ttl   = time.Minute
)

var quiet = slog.New(slog.DiscardHandler)

func options(name string, command func(context.Context) (int, error), paths ...string) publish.Options {
	return publish.Options{
		Name: name, Paths: paths, Command: command, Logger: quiet,
		Lease: lockproto.Options{TTL: ttl, Owner: "test", Poll: time.Second},
	}
}

// succeed is a command that checks it runs under a held writer lease.
func succeed(t *testing.T, st storage.Store) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		if ctx.Err() != nil {
			t.Errorf("command started with its context done: %v", context.Cause(ctx))
		}
		if hs := holders(t, st); len(hs) != 1 || hs[0].Kind != lockproto.KindWriter {
			t.Errorf("command runs under %v, want one writer lease", hs)
		}
		return 0, nil
	}
}

func holders(t *testing.T, st storage.Store) []lockproto.Holder {
	t.Helper()
	hs, err := lockproto.List(context.Background(), st, lockproto.Judging{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func requireNoLeases(t *testing.T, st storage.Store) {
	t.Helper()
	if hs := holders(t, st); len(hs) != 0 {
		t.Fatalf("leases left behind: %v", hs)
	}
}

// body returns the object at key, and whether it exists.
func body(t *testing.T, st storage.Store, key string) (string, bool) {
	t.Helper()
	r, err := st.Get(context.Background(), key)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func requireNoMarker(t *testing.T, st storage.Store, key string) {
	t.Helper()
	if b, ok := body(t, st, key); ok {
		t.Fatalf("marker %s written: %q", key, b)
	}
}

var kinds = []error{publish.ErrInvalid, publish.ErrStore, publish.ErrLocked, publish.ErrLeaseLost, publish.ErrInterrupted, publish.ErrCommand}

// requireKind fails unless err matches want and no other kind: a front end
// maps each kind to one exit code.
func requireKind(t *testing.T, err, want error) {
	t.Helper()
	var matched []error
	for _, k := range kinds {
		if errors.Is(err, k) {
			matched = append(matched, k)
		}
	}
	if len(matched) != 1 || matched[0] != want {
		t.Fatalf("err = %v: matches %v, want only %v", err, matched, want)
	}
}

// Success: the marker names the path, the previous value is kept as a
// generation (Keep 2) and trimmed once it falls out, the lease is released.
func TestCommandSucceededWritesMarkerWithHistory(t *testing.T) {
	st := storage.NewMem(nil)
	for i, p := range []string{pathA, pathB, pathC} {
		o := options("team/web", succeed(t, st), p)
		o.Keep = 2
		res, err := publish.Root(t.Context(), st, o)
		if err != nil {
			t.Fatalf("publish %s: %v", p, err)
		}
		if got, _ := body(t, st, "gcroots/team/web"); got != p+"\n" || res.Key != "gcroots/team/web" || res.Marker.Key != res.Key {
			t.Fatalf("after %s: marker %q, result %+v", p, got, res)
		}
		requireNoLeases(t, st)
		switch i {
		case 1:
			if got, _ := body(t, st, "gcroots/team/web~1"); got != pathA+"\n" || len(res.Trimmed) != 0 {
				t.Fatalf("generation 1 = %q, trimmed %v; want %s kept", got, res.Trimmed, pathA)
			}
		case 2:
			if got, _ := body(t, st, "gcroots/team/web~2"); got != pathB+"\n" || !slices.Equal(res.Trimmed, []string{"gcroots/team/web~1"}) {
				t.Fatalf("generation 2 = %q, trimmed %v; want %s kept and ~1 trimmed", got, res.Trimmed, pathB)
			}
			requireNoMarker(t, st, "gcroots/team/web~1")
		}
	}
}

// The writer lease is named after the marker unless a job is given.
func TestLeaseNamedAfterMarker(t *testing.T) {
	st := storage.NewMem(nil)
	var job string
	_, err := publish.Root(t.Context(), st, options("ci/main", func(context.Context) (int, error) {
		if hs := holders(t, st); len(hs) == 1 && hs[0].Record != nil {
			job = hs[0].Record.Job
		}
		return 0, nil
	}, pathA))
	if err != nil || job != "ci-main" {
		t.Fatalf("err %v, lease job %q; want ci-main", err, job)
	}
}

// A command that exits non-zero: its status comes back, no marker.
func TestCommandFailedNoMarker(t *testing.T) {
	st := storage.NewMem(nil)
	_, err := publish.Root(t.Context(), st, options("app", func(context.Context) (int, error) { return 42, nil }, pathA))
	var failed *publish.CommandFailedError
	if !errors.As(err, &failed) || failed.Status != 42 {
		t.Fatalf("err = %v, want status 42", err)
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			t.Fatalf("a failed command also matches %v", k)
		}
	}
	requireNoMarker(t, st, "gcroots/app")
	requireNoLeases(t, st)
}

// A command that could not run: ErrCommand, no marker.
func TestCommandErrorNoMarker(t *testing.T) {
	st := storage.NewMem(nil)
	_, err := publish.Root(t.Context(), st, options("app", func(context.Context) (int, error) {
		return 0, errors.New("exec: no such file")
	}, pathA))
	requireKind(t, err, publish.ErrCommand)
	requireNoMarker(t, st, "gcroots/app")
	requireNoLeases(t, st)
}

// breakWriter deletes the one writer lease, as `kiss locks break --force`
// or a pruner that judged it stale would.
func breakWriter(t *testing.T, st storage.Store) {
	t.Helper()
	hs := holders(t, st)
	if len(hs) != 1 {
		t.Fatalf("want one lease to break, have %v", hs)
	}
	if _, err := lockproto.Break(context.Background(), st, hs[0].Key, lockproto.Judging{TTL: ttl}, true); err != nil {
		t.Fatal(err)
	}
}

// The lease is lost while the command runs: the command is told (its
// context ends), and whether it then exits 0 or was stopped (143, SIGTERM),
// no marker is written and the error is ErrLeaseLost, not the command's
// status.
func TestLeaseLostDuringCommandNoMarker(t *testing.T) {
	for _, status := range []int{0, 143} {
		synctest.Test(t, func(t *testing.T) {
			st := storage.NewMem(nil)
			_, err := publish.Root(t.Context(), st, options("app", func(ctx context.Context) (int, error) {
				breakWriter(t, st)
				select {
				case <-ctx.Done():
				case <-time.After(10 * ttl):
					t.Error("the command's context did not end when its lease was lost")
				}
				return status, nil
			}, pathA))
			requireKind(t, err, publish.ErrLeaseLost)
			if !errors.Is(err, lockproto.ErrLeaseLost) {
				t.Errorf("status %d: err = %v, want the lease's own cause too", status, err)
			}
			requireNoMarker(t, st, "gcroots/app")
		})
	}
}

// The lease is lost in the last moment of the command, before the lease's
// refresher could notice: the confirmation after the command catches it.
func TestLeaseLostUnnoticedConfirmRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := storage.NewMem(nil)
		_, err := publish.Root(t.Context(), st, options("app", func(ctx context.Context) (int, error) {
			breakWriter(t, st)
			if ctx.Err() != nil {
				t.Error("the lease's context ended at once: this test would not reach the confirmation")
			}
			return 0, nil
		}, pathA))
		requireKind(t, err, publish.ErrLeaseLost)
		requireNoMarker(t, st, "gcroots/app")
	})
}

// The caller is interrupted while the command runs: no marker even if the
// command exits 0, the error is ErrInterrupted (not a lost lease), and the
// lease is still released.
func TestInterruptedNoMarkerLeaseReleased(t *testing.T) {
	st := storage.NewMem(nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := publish.Root(ctx, st, options("app", func(lctx context.Context) (int, error) {
		cancel()
		<-lctx.Done()
		return 0, nil
	}, pathA))
	requireKind(t, err, publish.ErrInterrupted)
	requireNoMarker(t, st, "gcroots/app")
	requireNoLeases(t, st)
}

// What no store accepts is refused before any lease: with a prune holding
// the lock, the answer is ErrInvalid, not ErrLocked, and nothing runs.
func TestInvalidRefusedBeforeLease(t *testing.T) {
	st := storage.NewMem(nil)
	p, err := lockproto.AcquirePrune(t.Context(), st, lockproto.Options{TTL: ttl, Owner: "pruner", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(t.Context())
	ran := func(context.Context) (int, error) {
		t.Error("command ran for an invalid root")
		return 0, nil
	}
	for name, o := range map[string]publish.Options{
		"dot segment":        options("team/.x", ran, pathA),
		"lease directory":    options(".lock/x", ran, pathA),
		"generation name":    options("app~3", ran, pathA),
		"empty name":         options("", ran, pathA),
		"no paths":           options("app", ran),
		"not a store path":   options("app", ran, "/tmp/x"),
		"other store dir":    options("app", ran, "/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a"),
		"bare hash":          options("app", ran, "dsdpfp4hyv22f4dqg1d0spdsv1fq33xx"),
		"one bad among good": options("app", ran, pathA, "/nix/store/x"),
		"negative keep":      func() publish.Options { o := options("app", ran, pathA); o.Keep = -1; return o }(),
	} {
		_, err := publish.Root(t.Context(), st, o)
		if !errors.Is(err, publish.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			continue
		}
		requireKind(t, err, publish.ErrInvalid)
	}
	if hs := holders(t, st); len(hs) != 1 || hs[0].Kind != lockproto.KindPrune {
		t.Fatalf("leases %v, want the prune lease alone", hs)
	}
	for o, err := range st.List(t.Context(), nixcache.RootsPrefix) {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(o.Key, lockproto.LockPrefix) {
			t.Errorf("%s written", o.Key)
		}
	}
}

// A prune holds the lock and the wait runs out: ErrLocked naming the
// pruner; the command never runs.
func TestLockedCommandDoesNotRun(t *testing.T) {
	st := storage.NewMem(nil)
	p, err := lockproto.AcquirePrune(t.Context(), st, lockproto.Options{TTL: ttl, Owner: "the-pruner", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(t.Context())
	_, err = publish.Root(t.Context(), st, options("app", func(context.Context) (int, error) {
		t.Error("command ran while a prune held the lock")
		return 0, nil
	}, pathA))
	requireKind(t, err, publish.ErrLocked)
	if !lockproto.IsLocked(err) || !strings.Contains(err.Error(), "the-pruner") {
		t.Fatalf("err = %v, want the lockproto error naming the pruner", err)
	}
	requireNoMarker(t, st, "gcroots/app")
}

// A store without conditional writes, or whose gcroots is a file, is
// ErrStore before anything runs.
func TestStoreUnusable(t *testing.T) {
	ran := func(context.Context) (int, error) {
		t.Error("command ran on an unusable store")
		return 0, nil
	}
	_, err := publish.Root(t.Context(), storagetest.WithoutCAS(storage.NewMem(nil)), options("app", ran, pathA))
	requireKind(t, err, publish.ErrStore)
	if !errors.Is(err, lockproto.ErrUnsupportedStore) {
		t.Fatalf("err = %v, want the lock protocol's reason", err)
	}

	st := storage.NewMem(nil)
	if _, err := st.Put(t.Context(), "gcroots", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = publish.Root(t.Context(), st, options("app", ran, pathA))
	requireKind(t, err, publish.ErrStore)
	requireNoLeases(t, st)
}

// The store paths are checked against the cache's own StoreDir.
func TestStoreDirOfTheCache(t *testing.T) {
	st := storage.NewMem(nil)
	if _, err := st.Put(t.Context(), nixcache.CacheInfoKey, strings.NewReader("StoreDir: /gnu/store\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	gnu := "/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a"
	if _, err := publish.Root(t.Context(), st, options("app", nil, pathA)); !errors.Is(err, publish.ErrInvalid) {
		t.Fatalf("a /nix/store path in a /gnu/store cache: err = %v, want ErrInvalid", err)
	}
	res, err := publish.Root(t.Context(), st, options("app", nil, gnu))
	if got, _ := body(t, st, "gcroots/app"); err != nil || got != gnu+"\n" || res.StoreDir != "/gnu/store" {
		t.Fatalf("err %v, marker %q, store dir %q", err, got, res.StoreDir)
	}
}

// Without a command (kiss roots add) the paths should be in the cache
// already: those that are not are reported, and the marker is written anyway.
func TestWithoutCommandReportsMissingPaths(t *testing.T) {
	st := storage.NewMem(nil)
	narinfo, err := nixcache.NarInfoKeyFor(pathA, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(t.Context(), narinfo, bytes.NewReader([]byte("StorePath: "+pathA+"\n")), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := publish.Root(t.Context(), st, options("app", nil, pathA, pathB))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Missing, []string{pathB}) {
		t.Fatalf("missing = %v, want [%s]", res.Missing, pathB)
	}
	if got, _ := body(t, st, "gcroots/app"); got != pathA+"\n"+pathB+"\n" {
		t.Fatalf("marker = %q", got)
	}
	requireNoLeases(t, st)
}
