package lockproto

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// crashedWriter plants the lease a SIGKILLed writer leaves behind, with
// the TTL it declared.
func crashedWriter(t *testing.T, st storage.Store, name, declared string) string {
	t.Helper()
	key := LockPrefix + name + ".0123456789abcdef"
	body := `{"version":1,"kind":"writer","nonce":"0123456789abcdef0123456789abcdef","owner":"` + name + `","created":"2026-01-01T00:00:00Z","ttl":"` + declared + `"}`
	if _, err := st.Put(t.Context(), key, strings.NewReader(body), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatal(err)
	}
	return key
}

// MUST M1 (issue 11 item 10): the TTL a lease declares lengthens how long
// others wait for it only up to MaxTTL. A SIGKILLed writer that declared a
// year blocks prunes (and resists `locks break`) for MaxTTL, not a year.
func TestM1_DeclaredTTLBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore(0)
		year := crashedWriter(t, st, "year", "8760h0m0s")
		time.Sleep(DefaultMaxTTL + time.Minute)

		hs, err := List(t.Context(), st, Judging{TTL: ttl})
		if err != nil || len(hs) != 1 {
			t.Fatalf("list: %v %v", hs, err)
		}
		if h := hs[0]; !h.Stale || !h.TTLCapped {
			t.Fatalf("a year-long lease %v old: stale=%v capped=%v, want both", h.Age, h.Stale, h.TTLCapped)
		}
		if !strings.Contains(hs[0].String(), "declares 8760h0m0s") {
			t.Errorf("holder does not say what it declared: %s", hs[0])
		}
		// locks break without --force removes it.
		if _, err := Break(t.Context(), st, year, Judging{TTL: ttl}, false); err != nil {
			t.Fatalf("break without force: %v", err)
		}

		// A prune is not blocked by it either.
		crashedWriter(t, st, "year2", "8760h0m0s")
		time.Sleep(DefaultMaxTTL + time.Minute)
		o := opts()
		o.Wait = time.Minute
		p, err := AcquirePrune(t.Context(), st, o)
		if err != nil {
			t.Fatalf("a year-long lease %v old blocks the prune: %v", DefaultMaxTTL+time.Minute, err)
		}
		p.Release(t.Context())

		// Within the bound the declared TTL still wins (C2): a lease
		// declaring 2h is fresh after 1h for a judge whose own TTL is 60s.
		crashedWriter(t, st, "twohours", "2h0m0s")
		time.Sleep(time.Hour)
		o.Wait = 0
		if _, err := AcquirePrune(t.Context(), st, o); !IsLocked(err) {
			t.Fatalf("a 2h lease 1h old did not block: %v", err)
		}
		// A judge with a smaller bound caps it sooner.
		o.MaxTTL = 30 * time.Minute
		p, err = AcquirePrune(t.Context(), st, o)
		if err != nil {
			t.Fatalf("with MaxTTL 30m, a lease 1h old still blocks: %v", err)
		}
		p.Release(t.Context())
	})
}

// MUST M2: a holder never declares more than its own bound: acquiring with
// TTL > MaxTTL is refused, so a kiss writer is never judged stale while it
// still refreshes on its own (longer) schedule (the model's late_abort
// variant is what that would be).
func TestM2_AcquireRefusesTTLOverBound(t *testing.T) {
	st := memStore(0)
	o := opts()
	o.TTL = 8760 * time.Hour
	if _, err := AcquireWriter(t.Context(), st, "w", o); !errors.Is(err, ErrTTLTooLong) {
		t.Fatalf("writer with TTL 8760h: %v, want ErrTTLTooLong", err)
	}
	if _, err := AcquirePrune(t.Context(), st, o); !errors.Is(err, ErrTTLTooLong) {
		t.Fatalf("pruner with TTL 8760h: %v, want ErrTTLTooLong", err)
	}
	if ks := leaseKeys(t, st); len(ks) != 0 {
		t.Fatalf("a refused acquisition left leases: %v", ks)
	}
	o.MaxTTL = o.TTL // the operator raised the bound, everywhere
	w, err := AcquireWriter(t.Context(), st, "w", o)
	if err != nil {
		t.Fatal(err)
	}
	w.Release(t.Context())
}
