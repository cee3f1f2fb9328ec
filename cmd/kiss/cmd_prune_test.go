package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/inventory"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// testCache writes a flat file cache: live → dep, and garbage; all objects
// three hours old (the file store's clock is the host's).
func testCache(t *testing.T) (dir string, live, garbage string) {
	t.Helper()
	dir = t.TempDir()
	mk := func(name string, refs ...string) string {
		sum := sha256.Sum256([]byte(name))
		var h nixcache.Hash
		copy(h[:], sum[:])
		h, _ = nixcache.ParseHash(h.String())
		base := h.String() + "-" + name
		nar := "nar/" + h.String() + ".nar"
		write(t, dir, nar, "nar of "+name)
		write(t, dir, h.String()+".narinfo", fmt.Sprintf("StorePath: /nix/store/%s\nURL: %s\nCompression: none\nFileSize: %d\nNarSize: 1\nReferences: %s\n",
			base, nar, len("nar of "+name), strings.Join(refs, " ")))
		return base
	}
	dep := mk("dep")
	live = "/nix/store/" + mk("live", dep)
	garbage = "/nix/store/" + mk("garbage", dep)
	write(t, dir, "nix-cache-info", "StoreDir: /nix/store\n")
	old := time.Now().Add(-3 * time.Hour)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	return dir, live, garbage
}

func write(t *testing.T, dir, key, body string) {
	t.Helper()
	p := filepath.Join(dir, key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func narinfoOf(dir, storePath string) string {
	return filepath.Join(dir, strings.TrimPrefix(storePath, "/nix/store/")[:32]+".narinfo")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestPruneCLI(t *testing.T) {
	dir, live, garbage := testCache(t)

	// No roots: refused, nothing deleted.
	if code, _, stderr := runKiss(t, "prune", dir); code != ExitRefused || !fileExists(narinfoOf(dir, garbage)) {
		t.Fatalf("empty roots: exit %d, stderr %s", code, stderr)
	}
	// A flag after STORE is read like one before it: a dry run, refused for no roots.
	if code, _, stderr := runKiss(t, "prune", dir, "--dry-run"); code != ExitRefused || !strings.Contains(stderr, "no gc roots") || !fileExists(narinfoOf(dir, garbage)) {
		t.Fatalf("flag after STORE: exit %d %s", code, stderr)
	}
	if code, _, stderr := runKiss(t, "prune", "--root-max-age", "soon", dir); code != ExitUsage {
		t.Fatalf("bad --root-max-age: exit %d %s", code, stderr)
	}
	if code, _, stderr := runKiss(t, "roots", "add", dir, "web1", live); code != ExitOK {
		t.Fatalf("roots add: exit %d %s", code, stderr)
	}
	code, out, stderr := runKiss(t, "roots", "list", "--json", dir)
	var rows []struct {
		Source       string `json:"source"`
		ClosurePaths int    `json:"closure_paths"`
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].ClosurePaths != 2 {
		t.Fatalf("roots list: exit %d %q %s", code, out, stderr)
	}

	// Dry run lists what it would delete and deletes nothing.
	code, out, stderr = runKiss(t, "prune", "--dry-run", "--list", dir)
	if code != ExitOK || !strings.Contains(out, filepath.Base(narinfoOf(dir, garbage))) || strings.Contains(out, filepath.Base(narinfoOf(dir, live))) {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, stderr)
	}
	if !fileExists(narinfoOf(dir, garbage)) {
		t.Fatal("dry run deleted")
	}

	// Locked: another prune holds the lease.
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := lockproto.AcquirePrune(context.Background(), st, lockproto.Options{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runKiss(t, "prune", "--lock-wait", "0s", dir); code != ExitLocked {
		t.Fatalf("locked: exit %d %s", code, stderr)
	}
	lease.Release(context.Background())

	// The real run, as JSON, with metrics.
	metrics := filepath.Join(t.TempDir(), "kiss.prom")
	code, out, stderr = runKiss(t, "prune", "--json", "--metrics-file", metrics, dir)
	var rep struct {
		ExitCode int `json:"exit_code"`
		Deleted  struct {
			Objects int `json:"objects"`
		} `json:"deleted"`
		Requests map[string]int64 `json:"requests"`
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.ExitCode != 0 || rep.Deleted.Objects != 2 || rep.Requests["delete-many-keys"] != 2 {
		t.Fatalf("prune: exit %d %+v\n%s\n%s", code, rep, out, stderr)
	}
	if fileExists(narinfoOf(dir, garbage)) || !fileExists(narinfoOf(dir, live)) {
		t.Fatal("wrong objects deleted")
	}
	m, err := os.ReadFile(metrics)
	if err != nil || !strings.Contains(string(m), "kiss_prune_success 1") || !strings.Contains(string(m), "kiss_prune_deleted_objects 2") {
		t.Fatalf("metrics: %v\n%s", err, m)
	}

	// A reachable path's NAR gone: refused, exit 4; the report and the
	// metrics count it.
	liveNAR := filepath.Join(dir, "nar", strings.TrimPrefix(live, "/nix/store/")[:32]+".nar")
	if err := os.Rename(liveNAR, liveNAR+".away"); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runKiss(t, "prune", "--json", "--metrics-file", metrics, dir)
	var refused struct {
		ExitCode    int `json:"exit_code"`
		MissingNARs int `json:"missing_nars"`
	}
	if code != ExitRefused || json.Unmarshal([]byte(out), &refused) != nil || refused.ExitCode != ExitRefused || refused.MissingNARs != 1 {
		t.Fatalf("missing NAR: exit %d %+v\n%s\n%s", code, refused, out, stderr)
	}
	if m, _ := os.ReadFile(metrics); !strings.Contains(string(m), `kiss_prune_integrity_problems{problem="missing_nars"} 1`) || !strings.Contains(string(m), "kiss_prune_exit_code 4") {
		t.Fatalf("metrics after a missing NAR:\n%s", m)
	}
	code, out, _ = runKiss(t, "prune", dir)
	if code != ExitRefused || !strings.Contains(out, "missing: 1 NARs and 0 references of reachable paths") || !strings.Contains(out, "deleted 0 objects") ||
		!strings.Contains(out, "planned, before the run stopped:") {
		t.Fatalf("missing NAR, summary: exit %d\n%s", code, out)
	}
	if err := os.Rename(liveNAR+".away", liveNAR); err != nil {
		t.Fatal(err)
	}

	// A broken reachable narinfo: refused, exit 4, metrics say so.
	write(t, dir, filepath.Base(narinfoOf(dir, live)), "StorePath: nonsense\n")
	if code, _, stderr := runKiss(t, "prune", "--metrics-file", metrics, dir); code != ExitRefused {
		t.Fatalf("broken narinfo: exit %d %s", code, stderr)
	}
	if m, _ := os.ReadFile(metrics); !strings.Contains(string(m), "kiss_prune_success 0") || !strings.Contains(string(m), "kiss_prune_exit_code 4") {
		t.Fatalf("metrics after refusal:\n%s", m)
	}
	if code, _, _ := runKiss(t, "roots", "rm", dir, "web1"); code != ExitOK || fileExists(filepath.Join(dir, "gcroots/web1")) {
		t.Fatalf("roots rm: exit %d", code)
	}
}

// Issue 11 item 9: an S3 DeleteObjects that the server applied but whose
// answer was lost (every attempt: the connection is reset after the server
// deleted) must not be reported as "deleted 0": kiss re-checks the batch.
func TestPruneLostDeleteAnswerIsRechecked(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	dir, live, _ := testCache(t)
	p, store := faultyVersitygw(t, 3)
	ctx := context.Background()
	st, err := storage.Open(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var keys []string
	err = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		keys = append(keys, filepath.ToSlash(rel))
		_, err = st.Put(ctx, filepath.ToSlash(rel), f, storage.PutOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runKiss(t, "roots", "add", store, "web1", live); code != ExitOK {
		t.Fatalf("roots add: exit %d %s", code, stderr)
	}
	// --grace 0s deletes only what the store's clock (1 s resolution) sees
	// as older than now.
	time.Sleep(2500 * time.Millisecond)

	p.Inject(storagetest.ProxyFault{Op: storagetest.S3DeleteObjects, Applied: true, Reset: true, Times: -1})
	metrics := filepath.Join(t.TempDir(), "kiss.prom")
	code, out, stderr := runKiss(t, "prune", "--json", "--grace", "0s", "--no-memo", "--metrics-file", metrics, store)
	t.Logf("faults %v\n%s\n%s", p.Faults(), out, stderr)
	if p.Faults()["applied-reset"] == 0 {
		t.Fatal("no DeleteObjects answer was dropped")
	}
	var rep struct {
		ExitCode int `json:"exit_code"`
		Deleted  struct {
			Objects int `json:"objects"`
		} `json:"deleted"`
		Uncertain struct {
			Objects int `json:"objects"`
		} `json:"deleted_uncertain"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v", err)
	}
	gone := 0
	for _, k := range keys {
		if _, err := st.Stat(ctx, k); err != nil {
			gone++
		}
	}
	if code != ExitStore || rep.ExitCode != ExitStore {
		t.Errorf("exit %d (json %d), want %d: a batch failed", code, rep.ExitCode, ExitStore)
	}
	if gone == 0 || rep.Deleted.Objects != gone || rep.Uncertain.Objects != 0 {
		t.Fatalf("%d objects gone, report says deleted %d, uncertain %d", gone, rep.Deleted.Objects, rep.Uncertain.Objects)
	}
	if m, _ := os.ReadFile(metrics); !strings.Contains(string(m), fmt.Sprintf("kiss_prune_deleted_objects %d", gone)) || !strings.Contains(string(m), "kiss_prune_deleted_uncertain_objects 0") {
		t.Fatalf("metrics:\n%s", m)
	}
}

// TestPruneInventoryCLI: --inventory reads a manifest (file:// here) and
// lists below the top level from it: a NAR the report does not have is
// never deleted; a bad manifest is refused (exit 4), a report of another
// bucket is a usage error (exit 2).
func TestPruneInventoryCLI(t *testing.T) {
	dir, live, garbage := testCache(t)
	if code, _, stderr := runKiss(t, "roots", "add", dir, "web1", live); code != ExitOK {
		t.Fatalf("roots add: exit %d %s", code, stderr)
	}
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	var objs []storage.Object
	for o, err := range st.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	invDir := t.TempDir()
	inv, err := storage.OpenFile(invDir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := inventory.Write(context.Background(), inv, "inv", "cache", "CSV", time.Now(), objs, 0)
	if err != nil {
		t.Fatal(err)
	}
	manifest := "file://" + filepath.Join(invDir, key)
	// A NAR created after the report, old-looking: not in it, so kept.
	write(t, dir, "nar/late.nar", "late")
	old := time.Now().Add(-3 * time.Hour)
	os.Chtimes(filepath.Join(dir, "nar/late.nar"), old, old)

	code, out, stderr := runKiss(t, "prune", "--json", "--inventory", manifest, dir)
	var rep struct {
		Inventory struct {
			Checked int64 `json:"checked"`
		} `json:"inventory"`
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Inventory.Checked != 1 {
		t.Fatalf("prune --inventory: exit %d\n%s\n%s", code, out, stderr)
	}
	if fileExists(narinfoOf(dir, garbage)) || !fileExists(narinfoOf(dir, live)) || !fileExists(filepath.Join(dir, "nar/late.nar")) {
		t.Fatal("wrong objects deleted")
	}
	write(t, invDir, key, "{not json")
	if code, _, stderr := runKiss(t, "prune", "--dry-run", "--inventory", manifest, dir); code != ExitRefused {
		t.Fatalf("bad manifest: exit %d %s", code, stderr)
	}
	if code, _, stderr := runKiss(t, "prune", "--dry-run", "--inventory", "http://x/manifest.json", dir); code != ExitUsage {
		t.Fatalf("bad inventory URL: exit %d %s", code, stderr)
	}
}

// --concurrency past gc.MaxConcurrency is a usage error: 10⁸ started as
// many walk goroutines, which took 97 s and ignored SIGTERM meanwhile.
func TestPruneConcurrencyBound(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runKiss(t, "prune", "--dry-run", "--concurrency", "100000000", dir)
	if code != ExitUsage || !strings.Contains(stderr, "concurrency") {
		t.Errorf("--concurrency 100000000: exit %d, %s; want %d", code, stderr, ExitUsage)
	}
}

// --root-max-age shorter than the grace period is refused before anything
// is read: a typo (30m for 30d) expired every marker older than half an
// hour, the whole root registry, in one run.
func TestRootMaxAgeBelowGraceRefused(t *testing.T) {
	dir, _, _ := testCache(t)
	if code, _, stderr := runKiss(t, "prune", "--root-max-age", "30m", dir); code != ExitUsage || !strings.Contains(stderr, "shorter than the grace period") {
		t.Fatalf("prune --root-max-age 30m (grace 2h): exit %d, want %d: %s", code, ExitUsage, stderr)
	}
	if code, _, stderr := runKiss(t, "prune", "--dry-run", "--allow-empty-roots", "--root-max-age", "30m", "--grace", "10m", dir); code != ExitOK {
		t.Fatalf("prune --root-max-age 30m --grace 10m: exit %d: %s", code, stderr)
	}
}
