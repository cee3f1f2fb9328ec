package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 11 item 10: a SIGKILLed writer that declared a year-long TTL must
// not block every prune, nor resist `kiss locks break`; and no kiss command
// takes a lease declaring more than --max-lock-ttl.
func TestLeaseTTLBounded(t *testing.T) {
	dir, live, _ := testCache(t)
	if code, _, stderr := runKiss(t, "roots", "add", dir, "web1", live); code != ExitOK {
		t.Fatalf("roots add: exit %d %s", code, stderr)
	}
	plant := func(name string) string {
		key := "gcroots/.lock/" + name + ".0123456789abcdef"
		write(t, dir, key, `{"version":1,"kind":"writer","nonce":"0123456789abcdef0123456789abcdef","owner":"crashed","host":"h","pid":1,"created":"2026-01-01T00:00:00Z","ttl":"8760h0m0s"}`)
		old := time.Now().Add(-3 * time.Second)
		if err := os.Chtimes(filepath.Join(dir, key), old, old); err != nil {
			t.Fatal(err)
		}
		return key
	}
	key := plant("year")

	code, out, stderr := runKiss(t, "locks", "list", "--max-lock-ttl", "2s", dir)
	if code != ExitOK || !strings.Contains(out, "stale (ttl 8760h0m0s capped)") {
		t.Fatalf("locks list: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runKiss(t, "locks", "break", "--max-lock-ttl", "2s", dir)
	if code != ExitOK || !strings.Contains(out, "1 stale lease(s) broken") || fileExists(filepath.Join(dir, key)) {
		t.Fatalf("locks break without --force: exit %d\n%s%s", code, out, stderr)
	}

	// (In-process runs share urfave/cli's flag values, and an environment
	// variable would stick to them: $KISS_MAX_LOCK_TTL is tested with the
	// binary, in e2e.)
	plant("year2")
	code, out, stderr = runKiss(t, "prune", "--lock-wait", "1s", "--lock-ttl", "1s", "--max-lock-ttl", "2s", dir)
	if code != ExitOK {
		t.Fatalf("prune blocked by a year-long lease 3 s old with a 2 s bound: exit %d\n%s%s", code, out, stderr)
	}

	// Nobody declares more than the bound.
	if code, _, stderr := runKiss(t, "with-lock", "--lock-ttl", "8760h", filepath.Join(dir, "gcroots/w"), live, "--", "true"); code != ExitUsage || !strings.Contains(stderr, "exceeds --max-lock-ttl") {
		t.Fatalf("with-lock --lock-ttl 8760h: exit %d %s", code, stderr)
	}
	if code, _, stderr := runKiss(t, "prune", "--lock-ttl", "8760h", dir); code != ExitUsage || !strings.Contains(stderr, "exceeds --max-lock-ttl") {
		t.Fatalf("prune --lock-ttl 8760h: exit %d %s", code, stderr)
	}
	if code, _, stderr := runKiss(t, "with-lock", "--lock-ttl", "8760h", "--max-lock-ttl", "9000h", filepath.Join(dir, "gcroots/w"), live, "--", "true"); code != ExitOK {
		t.Fatalf("with-lock with a raised bound: exit %d %s", code, stderr)
	}
}

// A lease touched into the future (a clock that stepped back) is fresh
// until the store's clock passes it; `locks list` says how far ahead
// instead of "0s ago", so an operator sees why it never goes stale.
func TestLocksListShowsFutureLease(t *testing.T) {
	dir, _, _ := testCache(t)
	key := "gcroots/.lock/prune"
	write(t, dir, key, `{"version":1,"kind":"prune","nonce":"0123456789abcdef0123456789abcdef","owner":"gone","host":"h","pid":1,"created":"2026-01-01T00:00:00Z","ttl":"30m0s"}`)
	future := time.Now().Add(3 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, key), future, future); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runKiss(t, "locks", "list", dir)
	if code != ExitOK || !strings.Contains(out, "AHEAD of the store clock") || !strings.Contains(out, "fresh") {
		t.Fatalf("locks list: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runKiss(t, "--json", "locks", "list", dir)
	if code != ExitOK || !strings.Contains(out, `"ahead_seconds": 10`) {
		t.Fatalf("locks list --json: exit %d\n%s%s", code, out, stderr)
	}
	if code, _, _ := runKiss(t, "locks", "break", dir); code != ExitOK || !fileExists(filepath.Join(dir, key)) {
		t.Fatalf("locks break without --force removed a future (fresh) lease: exit %d", code)
	}
}
