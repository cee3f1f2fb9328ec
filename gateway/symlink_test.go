package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

// Issue 11 item 12: the gateway serves what the store's listing shows and
// nothing else: a symlink inside the cache directory (to /etc/passwd, to a
// file next to the cache, or a directory symlinked out of it) is absent for
// the gateway as it is for the pruner, whatever its target.
func TestSymlinksAreNotServed(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	outside := filepath.Join(parent, "outside")
	for _, d := range []string{filepath.Join(dir, "nar"), filepath.Join(outside, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := "TOP SECRET, outside the cache\n"
	write := func(p, body string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(outside, "secret"), secret)
	write(filepath.Join(outside, "logs", "x.drv"), secret)
	write(filepath.Join(dir, "nix-cache-info"), "StoreDir: /nix/store\n")
	genuine := newPath("real")
	write(filepath.Join(dir, genuine.narKey()), "a real NAR")
	evil := newPath("evil")
	links := map[string]string{
		evil.narKey():     filepath.Join(outside, "secret"), // absolute, out of the cache
		evil.narinfoKey(): "../outside/secret",              // relative, out of the cache
		"nar/alias.nar":   filepath.Base(genuine.narKey()),  // relative, inside the cache
		"passwd.narinfo":  "/etc/passwd",
		"log":             filepath.Join(outside, "logs"), // a directory
	}
	for key, target := range links {
		p := filepath.Join(dir, key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for obj, err := range st.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		listed[obj.Key] = true
	}
	e := newEnv(t, st, gateway.Config{Auth: gateway.OpenReads{}})
	if r := e.do("GET", "/"+genuine.narKey(), nil); r.code != 200 || !listed[genuine.narKey()] {
		t.Fatalf("the real NAR: %d (listed %v)", r.code, listed[genuine.narKey()])
	}
	for _, key := range []string{evil.narKey(), evil.narinfoKey(), "nar/alias.nar", "passwd.narinfo", "log/x.drv"} {
		if listed[key] {
			t.Errorf("%s is listed", key)
		}
		for _, method := range []string{"GET", "HEAD"} {
			r := e.do(method, "/"+key, nil)
			if r.code != 404 || strings.Contains(r.body, "SECRET") || strings.Contains(r.body, "root:") {
				t.Errorf("%s /%s (a symlink): %d %q, want 404 as for an absent key", method, key, r.code, r.body)
			}
		}
		if _, err := st.Stat(t.Context(), key); err == nil {
			t.Errorf("storage: Stat(%s) follows a symlink the listing does not show", key)
		}
		if rd, err := st.Get(t.Context(), key); err == nil {
			rd.Close()
			t.Errorf("storage: Get(%s) follows a symlink the listing does not show", key)
		}
	}
}
