package lockproto

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// realStores opens the real drivers the protocol runs on in production.
func realStores(t *testing.T) map[string]storage.Store {
	t.Helper()
	out := map[string]storage.Store{}
	for name, url := range map[string]string{"file": t.TempDir(), "s3": testenv.Versitygw(t)} {
		st, err := storage.Open(t.Context(), url)
		if err != nil {
			t.Fatalf("open %s: %v", url, err)
		}
		t.Cleanup(func() { st.Close() })
		out[name] = st
	}
	return out
}

// MUST P1 on real stores: concurrent AcquirePrune calls (Wait=0) on
// file:// (link(2)) and versitygw (If-None-Match) have exactly one winner,
// every round; a stale lease taken over concurrently also has one winner.
func TestP1_FileStoreRace(t *testing.T) {
	for name, st := range realStores(t) {
		t.Run(name, func(t *testing.T) {
			o := Options{TTL: 10 * time.Second, Logger: slog.New(slog.DiscardHandler), Owner: "race"}
			const rounds, n = 10, 8
			for round := range rounds {
				var wins atomic.Int32
				var wg sync.WaitGroup
				var mu sync.Mutex
				var won []*Lease
				for range n {
					wg.Go(func() {
						l, err := AcquirePrune(t.Context(), st, o)
						switch {
						case err == nil:
							wins.Add(1)
							mu.Lock()
							won = append(won, l)
							mu.Unlock()
						case !IsLocked(err):
							t.Errorf("round %d: %v", round, err)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 {
					t.Fatalf("round %d: %d winners, want 1", round, wins.Load())
				}
				for _, l := range won {
					if err := l.Confirm(t.Context()); err != nil {
						t.Fatalf("round %d: winner cannot confirm: %v", round, err)
					}
					if err := l.Release(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
			}
			// A writer and a pruner never both hold: race them repeatedly.
			for round := range rounds {
				var wg sync.WaitGroup
				var p, w *Lease
				wg.Go(func() {
					l, err := AcquirePrune(t.Context(), st, o)
					if err == nil {
						p = l
					} else if !IsLocked(err) {
						t.Error(err)
					}
				})
				wg.Go(func() {
					l, err := AcquireWriter(t.Context(), st, "racer", o)
					if err == nil {
						w = l
					} else if !IsLocked(err) {
						t.Error(err)
					}
				})
				wg.Wait()
				if p != nil && w != nil {
					t.Fatalf("round %d: pruner and writer both hold a lease", round)
				}
				for _, l := range []*Lease{p, w} {
					if l != nil {
						l.Release(t.Context())
					}
				}
			}
			hs, err := List(t.Context(), st, Judging{})
			if err != nil || len(hs) != 0 {
				t.Fatalf("leases left: %v %v", hs, err)
			}
		})
	}
}
