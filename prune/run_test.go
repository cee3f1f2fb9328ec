package prune_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/prune"
	"github.com/kiss-cache/kiss/reports"
	"github.com/kiss-cache/kiss/storage"
)

// cache fills a fresh in-memory store whose clock runs three hours ahead of
// the objects' writes: a rooted path with a dependency, and garbage.
func cache(t *testing.T) (st storage.Store, rooted, dep, garbage string) {
	t.Helper()
	now := time.Now()
	clock := func() time.Time { return now }
	st = storage.NewMem(func() time.Time { return clock() })
	ctx := context.Background()
	put := func(key, body string) {
		if _, err := st.Put(ctx, key, strings.NewReader(body), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name string, refs ...string) string {
		sum := sha256.Sum256([]byte(name))
		var h nixcache.Hash
		copy(h[:], sum[:])
		base := h.String() + "-" + name
		nar := "nar/" + h.String() + ".nar"
		put(nar, "nar of "+name)
		put(nixcache.NarInfoKey(h), fmt.Sprintf("StorePath: /nix/store/%s\nURL: %s\nCompression: none\nFileSize: %d\nNarSize: 1\nReferences: %s\n",
			base, nar, len("nar of "+name), strings.Join(refs, " ")))
		return nixcache.NarInfoKey(h)
	}
	dep = mk("dep")
	depPath := strings.TrimSuffix(dep, ".narinfo") + "-dep"
	rooted = mk("rooted", depPath)
	garbage = mk("garbage", depPath)
	put("nix-cache-info", "StoreDir: /nix/store\n")
	put("gcroots/web", "/nix/store/"+strings.TrimSuffix(rooted, ".narinfo")+"-rooted\n")
	later := now.Add(3 * time.Hour)
	clock = func() time.Time { return later }
	return st, rooted, dep, garbage
}

func exists(t *testing.T, st storage.Store, key string) bool {
	t.Helper()
	_, err := st.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestRunDeletesGarbageKeepsRooted(t *testing.T) {
	st, rooted, dep, garbage := cache(t)
	var planned []string
	rep, err := prune.Run(context.Background(), st, prune.Options{
		Owner:      "test",
		OnDeletion: func(d gc.Deletion) { planned = append(planned, d.Key) },
	})
	if err != nil {
		t.Fatalf("prune: %v (report %+v)", err, rep)
	}
	if exists(t, st, garbage) || !exists(t, st, rooted) || !exists(t, st, dep) {
		t.Errorf("after prune: garbage %v rooted %v dep %v", exists(t, st, garbage), exists(t, st, rooted), exists(t, st, dep))
	}
	if rep.Deleted.Objects != 2 || rep.DryRun || rep.Requests["delete-many-keys"] != 2 || len(planned) != 2 {
		t.Errorf("report: deleted %+v dry %v requests %v planned %q", rep.Deleted, rep.DryRun, rep.Requests, planned)
	}
	if exists(t, st, lockproto.PruneKey) {
		t.Error("the prune lease was not released")
	}
}

func TestRunDryRunDeletesNothing(t *testing.T) {
	st, _, _, garbage := cache(t)
	rep, err := prune.Run(context.Background(), st, prune.Options{DryRun: true})
	if err != nil || !rep.DryRun || rep.DeleteTotal.Objects != 2 || !exists(t, st, garbage) {
		t.Fatalf("dry run: err %v report %+v, garbage kept %v", err, rep, exists(t, st, garbage))
	}
}

func TestRunLockedIsErrLease(t *testing.T) {
	st, _, _, garbage := cache(t)
	ctx := context.Background()
	held, err := lockproto.AcquirePrune(ctx, st, lockproto.Options{Owner: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	rep, err := prune.Run(ctx, st, prune.Options{LockWait: 10 * time.Millisecond, LockTTL: 3 * time.Second})
	if !errors.Is(err, prune.ErrLease) || !lockproto.IsLocked(err) || rep == nil || rep.Error == "" || !exists(t, st, garbage) {
		t.Fatalf("while another prune holds the lease: err %v, report %+v", err, rep)
	}
}

func TestRunRefusesWithoutRoots(t *testing.T) {
	st, _, _, garbage := cache(t)
	if err := st.Delete(context.Background(), "gcroots/web", storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := prune.Run(context.Background(), st, prune.Options{})
	if !errors.Is(err, gc.ErrEmptyRoots) || !exists(t, st, garbage) {
		t.Fatalf("no roots: %v", err)
	}
}

// cancelAfterDelete cancels the run's context once its first DeleteMany
// (the narinfo batch) is through: a run interrupted between its phases.
type cancelAfterDelete struct {
	storage.Store
	cancel context.CancelFunc
}

func (s *cancelAfterDelete) DeleteMany(ctx context.Context, keys []string) error {
	err := s.Store.DeleteMany(ctx, keys)
	s.cancel()
	return err
}

// A run interrupted after it deleted part of its plan (kiss prune's
// SIGINT, kiss-lambda's stop before its deadline) keeps its report in the
// cache like any other failed run (docs/operator.md: "also when it fails"):
// it was dropped, so kiss report showed no prune at all for a nightly
// function that deleted for 14 minutes and then stopped.
func TestRunInterruptedSavesReport(t *testing.T) {
	mem, rooted, _, garbage := cache(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &cancelAfterDelete{Store: mem, cancel: cancel}
	rep, err := prune.Run(ctx, st, prune.Options{Owner: "test"})
	if err == nil || prune.Classify(ctx, err) != prune.FailInterrupted {
		t.Fatalf("interrupted run: %v", err)
	}
	if exists(t, mem, garbage) || !exists(t, mem, rooted) || exists(t, mem, lockproto.PruneKey) {
		t.Errorf("after the run: garbage narinfo %v, rooted %v, lease %v", exists(t, mem, garbage), exists(t, mem, rooted), exists(t, mem, lockproto.PruneKey))
	}
	if rep.Deleted.Objects != 1 || rep.Error == "" {
		t.Errorf("report: deleted %+v, error %q: want the narinfo, and why it stopped", rep.Deleted, rep.Error)
	}
	saved, err := reports.List(context.Background(), mem, nixcache.ReportsPrefix)
	if err != nil || len(saved) != 1 {
		t.Fatalf("reports in the cache: %v, %v; want the interrupted run's", saved, err)
	}
	var got gc.Report
	if err := reports.Load(context.Background(), mem, saved[0].Key, &got); err != nil || got.Deleted.Objects != 1 || got.Error == "" {
		t.Errorf("saved report: %v, deleted %+v, error %q", err, got.Deleted, got.Error)
	}
}

// A root max age shorter than the grace period is a usage error before
// anything is taken or read (kiss prune: exit 2; kiss-lambda:
// KissPruneUsage): no lease, nothing deleted.
func TestRunRefusesRootMaxAgeBelowGrace(t *testing.T) {
	st, _, _, garbage := cache(t)
	ctx := context.Background()
	rep, err := prune.Run(ctx, st, prune.Options{Options: gc.Options{Grace: 2 * time.Hour, RootMaxAge: 30 * time.Minute}})
	if !errors.Is(err, gc.ErrRootMaxAge) || prune.Classify(ctx, err) != prune.FailUsage || rep == nil || rep.Error == "" || !exists(t, st, garbage) {
		t.Fatalf("root max age 30m, grace 2h: err %v (class %v), report %+v", err, prune.Classify(ctx, err), rep)
	}
	if _, err := st.Stat(ctx, lockproto.PruneKey); err == nil {
		t.Error("a prune lease was taken")
	}
}
