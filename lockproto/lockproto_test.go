package lockproto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// Tests are named after the MUST invariants of PROTOCOL.md. They run in a
// synctest bubble: time is fake and advances only when every goroutine is
// blocked, so TTLs of minutes cost nothing and results are deterministic.

const ttl = 60 * time.Second

func opts() Options {
	return Options{TTL: ttl, Logger: slog.New(slog.DiscardHandler), Poll: time.Second, Owner: "test"}
}

func memStore(skew time.Duration) storage.Store {
	return storage.NewMem(func() time.Time { return time.Now().Add(skew) })
}

func mustPrune(t *testing.T, st storage.Store, o Options) *Lease {
	t.Helper()
	l, err := AcquirePrune(t.Context(), st, o)
	if err != nil {
		t.Fatalf("AcquirePrune: %v", err)
	}
	return l
}

func mustWriter(t *testing.T, st storage.Store, job string, o Options) *Lease {
	t.Helper()
	l, err := AcquireWriter(t.Context(), st, job, o)
	if err != nil {
		t.Fatalf("AcquireWriter: %v", err)
	}
	return l
}

func leaseKeys(t *testing.T, st storage.Store) []string {
	t.Helper()
	hs, err := List(context.Background(), st, Judging{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, h := range hs {
		ks = append(ks, h.Key)
	}
	return ks
}

// MUST P1: at most one prune lease holder; concurrent acquirers with Wait=0
// get exactly one winner, the others a LockedError naming it.
func TestP1_OnePruneHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		const n = 8
		var wins, locked atomic.Int32
		var wg sync.WaitGroup
		leases := make(chan *Lease, n)
		for range n {
			wg.Go(func() {
				l, err := AcquirePrune(t.Context(), st, opts())
				switch {
				case err == nil:
					wins.Add(1)
					leases <- l
				case IsLocked(err):
					locked.Add(1)
					var le *LockedError
					errors.As(err, &le)
					if len(le.Holders) != 1 || le.Holders[0].Key != PruneKey || le.Holders[0].Record == nil {
						t.Errorf("LockedError holders = %+v", le.Holders)
					}
				default:
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || locked.Load() != n-1 {
			t.Fatalf("wins=%d locked=%d, want 1 and %d", wins.Load(), locked.Load(), n-1)
		}
		l := <-leases
		if err := l.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if ks := leaseKeys(t, st); len(ks) != 0 {
			t.Fatalf("leases left after release: %v", ks)
		}
	})
}

// MUST P2: the pruner holds its lease only once no fresh writer lease
// remains, and while it waits new writers are turned away.
func TestP2_PruneWaitsForWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		w := mustWriter(t, st, "job1", opts())
		var got time.Time
		done := make(chan error, 1)
		go func() {
			o := opts()
			o.Wait = 10 * time.Minute
			l, err := AcquirePrune(t.Context(), st, o)
			got = time.Now()
			if err == nil {
				defer l.Release(t.Context())
			}
			done <- err
		}()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		// The prune lease exists now: a new writer must step aside.
		if _, err := AcquireWriter(t.Context(), st, "job2", opts()); !IsLocked(err) {
			t.Fatalf("new writer while pruner waits: err = %v, want LockedError", err)
		}
		time.Sleep(2 * time.Minute) // longer than TTL: w refreshes meanwhile
		select {
		case err := <-done:
			t.Fatalf("pruner finished while writer held its lease: %v", err)
		default:
		}
		released := time.Now()
		if err := w.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("AcquirePrune: %v", err)
		}
		if got.Before(released) {
			t.Fatalf("pruner acquired at %v, before the writer released at %v", got, released)
		}
	})
}

// MUST P3: when Wait runs out the pruner leaves no lease behind and names
// the fresh writers.
func TestP3_PruneWaitBoundedNamesWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		w := mustWriter(t, st, "builder-7", opts())
		defer w.Release(t.Context())
		o := opts()
		o.Wait = 3 * time.Minute
		start := time.Now()
		_, err := AcquirePrune(t.Context(), st, o)
		var le *LockedError
		if !errors.As(err, &le) {
			t.Fatalf("err = %v, want LockedError", err)
		}
		if el := time.Since(start); el < o.Wait || el > o.Wait+5*time.Second {
			t.Fatalf("waited %v, want about %v", el, o.Wait)
		}
		if len(le.Holders) != 1 || le.Holders[0].Key != w.Key() || !strings.Contains(err.Error(), "builder-7") {
			t.Fatalf("holders = %v (%v)", le.Holders, err)
		}
		ks := leaseKeys(t, st)
		if len(ks) != 1 || ks[0] != w.Key() {
			t.Fatalf("leases = %v, want only the writer's", ks)
		}
	})
}

// MUST W1: a writer creates its own lease before reading the prune lease,
// and withdraws it when the prune lease is fresh.
func TestW1_WriterBacksOffFromFreshPrune(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		p := mustPrune(t, st, opts())
		// Record the order of the writer's first create and its prune read.
		var order []string
		var mu sync.Mutex
		rec := func(op storagetest.Op, key string) {
			mu.Lock()
			order = append(order, string(op)+" "+key)
			mu.Unlock()
		}
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, KeyPrefix: LockPrefix + "w.", Times: -1, Hook: rec})
		st.Inject(storagetest.Fault{Op: storagetest.OpGet, KeyPrefix: PruneKey, Times: -1, Hook: rec})
		o := opts()
		o.Wait = 90 * time.Second
		_, err := AcquireWriter(t.Context(), st, "w", o)
		if !IsLocked(err) {
			t.Fatalf("err = %v, want LockedError", err)
		}
		if len(order) < 2 || !strings.HasPrefix(order[0], "put ") || order[1] != "get "+PruneKey {
			t.Fatalf("order = %v, want own create before reading prune", order)
		}
		if ks := leaseKeys(t, base); len(ks) != 1 || ks[0] != PruneKey {
			t.Fatalf("leases = %v, want only prune (writer withdrew)", ks)
		}
		// After the pruner releases, the writer gets in.
		p.Release(t.Context())
		w := mustWriter(t, st, "w", opts())
		w.Release(t.Context())
	})
}

// MUST W2: a stale prune lease (not refreshed for TTL on the store clock)
// does not block writers; a fresh one does until it is released.
func TestW2_StalePruneIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		p := mustPrune(t, st, opts())
		// The pruner hangs: its refreshes never happen again.
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, KeyPrefix: PruneKey, Cond: "cas", Times: -1, Fail: true})
		time.Sleep(ttl / 2)
		if _, err := AcquireWriter(t.Context(), st, "w", opts()); !IsLocked(err) {
			t.Fatalf("at TTL/2: err = %v, want LockedError", err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if p.Err() == nil || !errors.Is(context.Cause(p.Context()), ErrLeaseLost) {
			t.Fatalf("pruner not self-aborted at TTL/2: %v", p.Err())
		}
		time.Sleep(ttl / 2)
		w := mustWriter(t, st, "w", opts())
		w.Release(t.Context())
	})
}

// MUST T1: a stale prune lease is taken over by compare-and-swap on its
// ETag; a fresh one never is.
func TestT1_StaleTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		old := mustPrune(t, st, opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, KeyPrefix: PruneKey, Cond: "cas", Times: 1000, Fail: true})
		time.Sleep(ttl - time.Second)
		if _, err := AcquirePrune(t.Context(), base, opts()); !IsLocked(err) {
			t.Fatalf("fresh lease taken over: %v", err)
		}
		time.Sleep(2 * time.Second)
		st.Reset()
		nl, err := AcquirePrune(t.Context(), base, opts())
		if err != nil {
			t.Fatalf("stale lease not taken over: %v", err)
		}
		if err := old.Confirm(t.Context()); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("old holder Confirm = %v, want ErrLeaseLost", err)
		}
		old.Release(t.Context())
		if err := nl.Confirm(t.Context()); err != nil {
			t.Fatalf("new holder lost its lease to the old one's release: %v", err)
		}
		nl.Release(t.Context())
	})
}

// MUST T2: two pruners racing to take over the same stale lease: exactly one wins.
func TestT2_TakeoverRaceOneWinner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		old := mustPrune(t, st, opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, KeyPrefix: PruneKey, Cond: "cas", Times: 1000, Fail: true})
		time.Sleep(ttl + time.Second)
		synctest.Wait()
		if old.Err() == nil {
			t.Fatal("old holder still believes it holds the lease")
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				l, err := AcquirePrune(t.Context(), base, opts())
				if err == nil {
					wins.Add(1)
					defer l.Release(t.Context())
					time.Sleep(time.Second)
				} else if !IsLocked(err) {
					t.Errorf("err: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d takeovers won, want 1", wins.Load())
		}
	})
}

// MUST R1: a held lease refreshed every TTL/6 stays fresh indefinitely, so
// nobody else can take it over.
func TestR1_RefreshKeepsFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := storagetest.NewFaulty(memStore(0))
		p := mustPrune(t, st, opts())
		before := st.Calls(storagetest.OpPut)
		o := opts()
		o.Wait = 5 * ttl
		if _, err := AcquirePrune(t.Context(), st, o); !IsLocked(err) {
			t.Fatalf("second pruner after 5 TTL: %v, want LockedError", err)
		}
		// 5 TTL at TTL/6 is 30 refreshes (a few creates by the loser too).
		refreshes := st.Calls(storagetest.OpPut) - before
		if refreshes < 29 {
			t.Fatalf("%d puts in 5 TTL, want >= 29 refreshes", refreshes)
		}
		if err := p.Confirm(t.Context()); err != nil {
			t.Fatal(err)
		}
		p.Release(t.Context())
	})
}

// MUST R2: a holder that cannot refresh for TTL/2 (failing or slow
// refreshes) cancels its own context, before anyone may judge it stale.
func TestR2_SelfAbortWhenRefreshFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault storagetest.Fault
	}{
		{"failing", storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Fail: true}},
		{"slow", storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Delay: ttl}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := storagetest.NewFaulty(memStore(0))
				w := mustWriter(t, st, "w", opts())
				start := time.Now()
				st.Inject(tc.fault)
				<-w.Context().Done()
				el := time.Since(start)
				if el > AbortAfter(ttl) || el < AbortAfter(ttl)-RefreshInterval(ttl) {
					t.Fatalf("self-abort after %v, want within (TTL/2-TTL/6, TTL/2]", el)
				}
				if !errors.Is(context.Cause(w.Context()), ErrLeaseLost) {
					t.Fatalf("cause = %v", context.Cause(w.Context()))
				}
				if err := w.Confirm(t.Context()); !errors.Is(err, ErrLeaseLost) {
					t.Fatalf("Confirm after loss = %v", err)
				}
				st.Reset()
				if err := w.Release(t.Context()); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// MUST R3: a refresh never resurrects a lease that lapsed on the store's
// clock, even if the holder's own clock says little time passed.
func TestR3_NoResurrection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var jump atomic.Int64
		st := storage.NewMem(func() time.Time { return time.Now().Add(time.Duration(jump.Load())) })
		p := mustPrune(t, st, opts())
		time.Sleep(time.Second)
		jump.Store(int64(ttl + time.Minute)) // the store's clock ran ahead
		if err := p.Confirm(t.Context()); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Confirm across a lapse = %v, want ErrLeaseLost", err)
		}
		p.Release(t.Context())
	})
}

// MUST F1: fencing. A pruner paused past its lease (no refresh reached the
// store) is refused by Confirm, so it deletes nothing; its context is done.
func TestF1_PausedPrunerIsFenced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		p := mustPrune(t, st, opts())
		if err := p.Confirm(t.Context()); err != nil {
			t.Fatalf("fresh Confirm: %v", err)
		}
		// "Pause": nothing from this process reaches the store.
		st.Inject(storagetest.Fault{Op: storagetest.OpAny, Times: -1, Fail: true})
		time.Sleep(ttl + time.Second)
		w := mustWriter(t, base, "w", opts())
		defer w.Release(t.Context())
		st.Reset() // "resume"
		deleted := 0
		if err := p.Confirm(t.Context()); err == nil {
			deleted++ // a real pruner would delete a batch here
		} else if !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Confirm = %v, want ErrLeaseLost", err)
		}
		if deleted != 0 || p.Context().Err() == nil {
			t.Fatalf("paused pruner not fenced (deleted %d, ctx %v)", deleted, p.Context().Err())
		}
		p.Release(t.Context())
		if ks := leaseKeys(t, base); len(ks) != 1 || ks[0] != w.Key() {
			t.Fatalf("leases = %v", ks)
		}
	})
}

// MUST A1: an ambiguous create (applied, response lost; the retry gets 412)
// is resolved by reading the nonce back: the lease is ours.
func TestA1_AmbiguousCreate(t *testing.T) {
	for _, kind := range []Kind{KindPrune, KindWriter} {
		t.Run(string(kind), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := storagetest.NewFaulty(memStore(0))
				st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "create", LoseResponse: true})
				var l *Lease
				if kind == KindPrune {
					l = mustPrune(t, st, opts())
				} else {
					l = mustWriter(t, st, "w", opts())
				}
				if st.Fired() != 1 || st.Calls(storagetest.OpPut) != 2 {
					t.Fatalf("fired %d, puts %d: the fault did not exercise the retry", st.Fired(), st.Calls(storagetest.OpPut))
				}
				if err := l.Confirm(t.Context()); err != nil {
					t.Fatalf("Confirm: %v", err)
				}
				l.Release(t.Context())
				if ks := leaseKeys(t, st); len(ks) != 0 {
					t.Fatalf("leases left: %v", ks)
				}
			})
		})
	}
}

// MUST A2: an ambiguous refresh (applied, response lost) is adopted after
// reading our nonce back; the lease stays held. An ambiguous release still
// removes the lease.
func TestA2_AmbiguousRefreshAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := storagetest.NewFaulty(memStore(0))
		p := mustPrune(t, st, opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", LoseResponse: true})
		if err := p.Confirm(t.Context()); err != nil {
			t.Fatalf("Confirm after lost response: %v", err)
		}
		if st.Fired() != 1 {
			t.Fatal("fault did not fire")
		}
		time.Sleep(3 * ttl)
		if err := p.Confirm(t.Context()); err != nil {
			t.Fatalf("lease not kept after ambiguous refresh: %v", err)
		}
		st.Inject(storagetest.Fault{Op: storagetest.OpDelete, LoseResponse: true})
		if err := p.Release(t.Context()); err != nil {
			// The delete landed; the retry finds nothing: success either way.
			t.Fatalf("Release: %v", err)
		}
		if ks := leaseKeys(t, st); len(ks) != 0 {
			t.Fatalf("leases left: %v", ks)
		}
	})
}

// MUST A3: 409 (a concurrent conditional request) and transient failures
// are retried with backoff, never treated as "exists" or "lost".
func TestA3_ConflictRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := storagetest.NewFaulty(memStore(0))
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "create", Times: 3, Fail: true, Err: storage.ErrConflict})
		w := mustWriter(t, st, "w", opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: 2, Fail: true, Err: storage.ErrConflict})
		if err := w.Confirm(t.Context()); err != nil {
			t.Fatalf("Confirm through 409s: %v", err)
		}
		if st.Fired() != 5 {
			t.Fatalf("fired %d, want 5", st.Fired())
		}
		w.Release(t.Context())
	})
}

// MUST C1: staleness depends only on the store's clock: hosts whose clocks
// are hours off the store's neither steal fresh leases nor honour stale ones.
func TestC1_ClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{-3 * time.Hour, 3 * time.Hour} {
		t.Run(fmt.Sprint(skew), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := memStore(skew)
				p := mustPrune(t, st, opts())
				time.Sleep(2 * ttl)
				if _, err := AcquirePrune(t.Context(), st, opts()); !IsLocked(err) {
					t.Fatalf("fresh lease stolen under skew %v: %v", skew, err)
				}
				hs, err := List(t.Context(), st, Judging{TTL: ttl})
				if err != nil || len(hs) != 1 || hs[0].Stale || hs[0].Age > RefreshInterval(ttl) {
					t.Fatalf("List = %+v, %v", hs, err)
				}
				p.Release(t.Context())
			})
		})
	}
}

// MUST L1: release deletes only our own lease; after a takeover the new
// holder's lease survives the old holder's release.
func TestL1_ReleaseOnlyOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		old := mustPrune(t, st, opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Fail: true})
		time.Sleep(ttl + time.Second)
		nl := mustPrune(t, base, opts())
		st.Reset()
		if err := old.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := nl.Confirm(t.Context()); err != nil {
			t.Fatalf("new lease gone after old release: %v", err)
		}
		nl.Release(t.Context())
	})
}

// MUST L2: release happens even after the caller's context was cancelled
// (SIGINT/SIGTERM), under a grace context.
func TestL2_ReleaseAfterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		ctx, cancel := context.WithCancel(t.Context())
		w, err := AcquireWriter(ctx, st, "w", opts())
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		<-w.Context().Done()
		if err := w.Release(ctx); err != nil {
			t.Fatalf("Release with cancelled ctx: %v", err)
		}
		if ks := leaseKeys(t, st); len(ks) != 0 {
			t.Fatalf("leases left: %v", ks)
		}
	})
}

// MUST B1: Break removes a stale lease, refuses a fresh one without force.
func TestB1_Break(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		w := mustWriter(t, st, "w", opts())
		name := strings.TrimPrefix(w.Key(), LockPrefix)
		if _, err := Break(t.Context(), base, name, Judging{TTL: ttl}, false); !errors.Is(err, ErrNotStale) {
			t.Fatalf("Break fresh = %v, want ErrNotStale", err)
		}
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Fail: true})
		time.Sleep(ttl + time.Second)
		h, err := Break(t.Context(), base, name, Judging{TTL: ttl}, false)
		if err != nil || !h.Stale || h.Record == nil || h.Record.Job != "w" {
			t.Fatalf("Break stale = %+v, %v", h, err)
		}
		p := mustPrune(t, base, opts())
		if _, err := Break(t.Context(), base, "prune", Judging{TTL: ttl}, true); err != nil {
			t.Fatalf("Break --force: %v", err)
		}
		if err := p.Confirm(t.Context()); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Confirm after forced break = %v", err)
		}
		w.Release(t.Context())
		p.Release(t.Context())
	})
}

// MUST P4: the pruner removes writer leases stale for more than 2×TTL and
// ignores (does not wait for) merely stale ones.
func TestP4_StaleWritersIgnoredAndCleaned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		a := mustWriter(t, st, "a", opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Fail: true})
		time.Sleep(2*ttl + time.Second)
		st.Reset()
		b := mustWriter(t, st, "b", opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", KeyPrefix: b.Key(), Times: -1, Fail: true})
		time.Sleep(ttl + time.Second)
		p := mustPrune(t, base, opts())
		ks := leaseKeys(t, base)
		if len(ks) != 2 || ks[0] != PruneKey || ks[1] != b.Key() {
			t.Fatalf("leases = %v, want prune and %s (a cleaned)", ks, b.Key())
		}
		p.Release(t.Context())
		a.Release(t.Context())
		b.Release(t.Context())
	})
}

// MUST U1: a store without atomic create or compare-and-swap is refused.
func TestU1_UnsupportedStore(t *testing.T) {
	st := storagetest.WithoutCAS(storage.NewMem(nil))
	if _, err := AcquirePrune(t.Context(), st, opts()); !errors.Is(err, ErrUnsupportedStore) || !errors.Is(err, storage.ErrNotSupported) {
		t.Fatalf("err = %v", err)
	}
	if _, err := AcquireWriter(t.Context(), st, "w", opts()); !errors.Is(err, ErrUnsupportedStore) {
		t.Fatalf("err = %v", err)
	}
}

func TestJobNames(t *testing.T) {
	for in, want := range map[string]string{
		"hydra-x86_64": "hydra-x86_64",
		"a/b c":        "a-b-c",
		".hidden":      "job-hidden",
		"":             "job",
	} {
		if got := SanitizeJob(in); got != want {
			t.Errorf("SanitizeJob(%q) = %q, want %q", in, got, want)
		}
		if !jobRE.MatchString(SanitizeJob(in)) {
			t.Errorf("SanitizeJob(%q) not valid", in)
		}
	}
	if _, err := AcquireWriter(t.Context(), storage.NewMem(nil), "../x", opts()); !errors.Is(err, ErrInvalidJob) {
		t.Fatalf("err = %v", err)
	}
}

// MUST C2: a lease is judged with the longer of the judge's TTL and the TTL
// its holder declared, so a writer configured with a short TTL does not
// ignore a pruner that refreshes on a longer schedule.
func TestC2_DeclaredTTLWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		p := mustPrune(t, st, opts()) // TTL 60s
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, KeyPrefix: PruneKey, Cond: "cas", Times: -1, Fail: true})
		time.Sleep(20 * time.Second)
		short := opts()
		short.TTL = 10 * time.Second
		if _, err := AcquireWriter(t.Context(), base, "w", short); !IsLocked(err) {
			t.Fatalf("writer with a short TTL ignored a fresh prune lease: %v", err)
		}
		if _, err := AcquirePrune(t.Context(), base, short); !IsLocked(err) {
			t.Fatalf("pruner with a short TTL took over a fresh lease: %v", err)
		}
		p.Release(t.Context())
	})
}

// MUST L3: release is prompt even while a refresh hangs (it is aborted),
// and still deletes the lease.
func TestL3_ReleasePromptDuringHangingRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := memStore(0)
		st := storagetest.NewFaulty(base)
		w := mustWriter(t, st, "w", opts())
		st.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: "cas", Times: -1, Delay: 10 * ttl})
		time.Sleep(RefreshInterval(ttl) + time.Second) // a refresh is now in flight
		start := time.Now()
		if err := w.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("release took %v behind a hanging refresh", el)
		}
		if ks := leaseKeys(t, base); len(ks) != 0 {
			t.Fatalf("leases left: %v", ks)
		}
	})
}

// A lease whose ModTime is ahead of the store's clock (the clock stepped
// back, or the file was touched) counts as just refreshed until the clock
// passes it (PROTOCOL.md); List says how far ahead, so an operator can see
// why a lease whose holder is gone never goes stale.
func TestC3_FutureModTimeShown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var skew atomic.Int64
		st := storage.NewMem(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
		skew.Store(int64(3 * time.Hour))
		p := mustPrune(t, st, opts())
		defer p.Release(t.Context())
		skew.Store(0) // the store's clock steps back 3 h (no refresh runs meanwhile)
		hs, err := List(t.Context(), st, Judging{TTL: ttl})
		if err != nil || len(hs) != 1 {
			t.Fatalf("List = %+v, %v", hs, err)
		}
		h := hs[0]
		if h.Stale || h.Age != 0 || h.Ahead < 3*time.Hour-time.Minute || h.Ahead > 3*time.Hour {
			t.Fatalf("future lease: stale %v, age %v, ahead %v; want fresh, 0, about 3h", h.Stale, h.Age, h.Ahead)
		}
		if s := h.String(); !strings.Contains(s, "3h0m0s ahead of the store clock") {
			t.Fatalf("String() = %q, want it to say how far ahead", s)
		}
	})
}

// MUST P5: a wait ends when Wait says, with one last try at the deadline,
// not up to a poll interval later (--lock-wait 2s with the 5 s poll of
// kiss with-lock took up to 5 s), for writers and the pruner alike.
func TestP5_WaitEndsAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		o := opts()
		o.Poll, o.Wait = 5*time.Second, 2*time.Second
		p := mustPrune(t, st, opts())
		start := time.Now()
		if _, err := AcquireWriter(t.Context(), st, "late", o); !IsLocked(err) {
			t.Fatalf("writer: err = %v, want LockedError", err)
		}
		if el := time.Since(start); el != o.Wait {
			t.Errorf("writer waited %v, want %v", el, o.Wait)
		}
		p.Release(t.Context())
		w := mustWriter(t, st, "busy", opts())
		defer w.Release(t.Context())
		start = time.Now()
		if _, err := AcquirePrune(t.Context(), st, o); !IsLocked(err) {
			t.Fatalf("prune: err = %v, want LockedError", err)
		}
		if el := time.Since(start); el != o.Wait {
			t.Errorf("prune waited %v, want %v", el, o.Wait)
		}
	})
}
