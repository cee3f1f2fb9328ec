package main

import (
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
