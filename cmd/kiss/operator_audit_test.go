package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newOperatorCache is an empty file:// binary cache with one narinfo and
// one marker naming its path.
func newOperatorCache(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	h := strings.Repeat("a", 32)
	path = "/nix/store/" + h + "-x"
	files := map[string]string{
		"nix-cache-info":    "StoreDir: /nix/store\n",
		h + ".narinfo":      "StorePath: " + path + "\nURL: nar/" + h + ".nar\nCompression: none\nNarHash: sha256:" + strings.Repeat("0", 52) + "\nNarSize: 1\nFileSize: 1\nReferences: \n",
		"nar/" + h + ".nar": "x",
		"gcroots/web":       path + "\n",
	}
	for k, v := range files {
		p := filepath.Join(dir, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, path
}

// kiss report --key only writes where the page belongs: a key of the
// cache's own layout (a narinfo, a NAR, a marker, nix-cache-info, .kiss/)
// is a usage error, and nothing is overwritten. It wrote the page over a
// narinfo or a marker before.
func TestReportKeyIsNotCacheContent(t *testing.T) {
	dir, _ := newOperatorCache(t)
	h := strings.Repeat("a", 32)
	for _, key := range []string{h + ".narinfo", "nar/" + h + ".nar", "gcroots/web", "gcroots/new", "nix-cache-info", ".kiss/x.html", "log/" + h + "-x.drv", "page.tmp"} {
		before, _ := os.ReadFile(filepath.Join(dir, key))
		code, _, stderr := runKiss(t, "report", "--key", key, "--grace", "0s", dir)
		if code != ExitUsage {
			t.Errorf("report --key %s: exit %d, want %d: %s", key, code, ExitUsage, stderr)
		}
		after, _ := os.ReadFile(filepath.Join(dir, key))
		if string(before) != string(after) {
			t.Errorf("report --key %s overwrote it", key)
		}
	}
	for _, key := range []string{"index.html", "reports/cache.html"} {
		if code, _, stderr := runKiss(t, "report", "--key", key, "--grace", "0s", dir); code != ExitOK {
			t.Errorf("report --key %s: exit %d, want %d: %s", key, code, ExitOK, stderr)
		}
	}
}

// A --trusted-key that is no public key is a bad argument (exit 2), as the
// help says, not an unusable store (3).
func TestVerifyBadTrustedKeyIsUsage(t *testing.T) {
	dir, _ := newOperatorCache(t)
	for _, k := range []string{"garbage", "name:", "name:bm90IGEga2V5"} {
		if code, _, stderr := runKiss(t, "verify", "--no-save", "--deep", "--trusted-key", k, dir); code != ExitUsage {
			t.Errorf("verify --trusted-key %q: exit %d, want %d: %s", k, code, ExitUsage, stderr)
		}
	}
}

// kiss roots rm of a marker that does not exist says so and exits 1 (as rm
// and why do for a path not in the cache), not 3 (store unusable) with
// "storage stat …: object not found"; the other names are still removed.
func TestRootsRmUnknownMarker(t *testing.T) {
	dir, path := newOperatorCache(t)
	if code, _, stderr := runKiss(t, "roots", "add", dir, "ops", path); code != ExitOK {
		t.Fatalf("roots add: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runKiss(t, "roots", "rm", dir, "nonexistent", "ops")
	if code != ExitFailure || !strings.Contains(stderr, "gcroots/nonexistent") || !strings.Contains(stderr, "no such marker") {
		t.Errorf("roots rm of a missing marker: exit %d, want %d with \"no such marker\": %s", code, ExitFailure, stderr)
	}
	if !strings.Contains(stdout, "removed gcroots/ops") {
		t.Errorf("roots rm did not report removing gcroots/ops: %q", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "gcroots", "ops")); !os.IsNotExist(err) {
		t.Errorf("gcroots/ops not removed: %v", err)
	}
	// --json: a JSON document on stdout (it printed nothing before).
	code, stdout, stderr = runKiss(t, "--json", "roots", "rm", dir, "web")
	var out struct {
		Removed []string `json:"removed"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); code != ExitOK || err != nil || len(out.Removed) != 1 || out.Removed[0] != "gcroots/web" {
		t.Errorf("--json roots rm: exit %d, %v, stdout %q: %s", code, err, stdout, stderr)
	}
}

// Two answers that looked fine and were not: kiss report --prunes -3 drew
// the default 20 prunes instead of refusing the number (now exit 2), and a
// refused kiss rm --json said "store_now": "0001-01-01T00:00:00Z" for a
// clock it never read (now left out).
func TestReportPrunesAndRefusedRmJSON(t *testing.T) {
	dir, path := newOperatorCache(t)
	for _, n := range []string{"0", "-3"} {
		if code, _, stderr := runKiss(t, "report", "--prunes", n, "--grace", "0s", dir); code != ExitUsage || !strings.Contains(stderr, "--prunes") {
			t.Errorf("report --prunes %s: exit %d, want %d: %s", n, code, ExitUsage, stderr)
		}
	}
	code, out, stderr := runKiss(t, "--json", "rm", dir, path)
	if code != ExitRefused || strings.Contains(out, "0001-01-01") {
		t.Errorf("rm --json of a rooted path: exit %d (want %d), output %s%s", code, ExitRefused, out, stderr)
	}
}
