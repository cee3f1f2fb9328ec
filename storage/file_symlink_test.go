package storage_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiss-cache/kiss/storage"
)

// The file driver reaches exactly what it lists: a symlink anywhere on a
// key's path (the last component or a directory, pointing inside the cache
// or out of it) is absent for Get, GetRange and Stat, with openat2 and on
// the fallback walk for kernels without it (issue 11 item 12).
func TestFileSymlinksAreAbsent(t *testing.T) {
	for _, mode := range []string{"openat2", "walk"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "walk" {
				defer storage.WithoutOpenat2()()
			}
			parent := t.TempDir()
			dir := filepath.Join(parent, "cache")
			for _, d := range []string{filepath.Join(dir, "nar", "sub"), filepath.Join(parent, "out")} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{filepath.Join(parent, "out", "x"), filepath.Join(dir, "nar", "real.nar"), filepath.Join(dir, "nar", "sub", "deep.nar"), filepath.Join(dir, "top.narinfo")} {
				if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for link, target := range map[string]string{
				"nar/out.nar":  filepath.Join(parent, "out", "x"),
				"nar/in.nar":   "real.nar",
				"link.narinfo": "top.narinfo",
				"dirlink":      "nar",
				"outdir":       filepath.Join(parent, "out"),
				"nar/sublink":  "sub",
				"dangling.nar": "/nonexistent",
				"nar/loop":     "loop",
				"selfdir":      ".",
			} {
				if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
					t.Fatal(err)
				}
			}
			st, err := storage.OpenFile(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"nar/real.nar", "nar/sub/deep.nar", "top.narinfo"} {
				if _, err := st.Stat(t.Context(), key); err != nil {
					t.Errorf("Stat(%s): %v", key, err)
				}
				r, err := st.Get(t.Context(), key)
				if err != nil {
					t.Errorf("Get(%s): %v", key, err)
					continue
				}
				r.Close()
			}
			for _, key := range []string{"nar/out.nar", "nar/in.nar", "link.narinfo", "dirlink/real.nar", "outdir/x",
				"nar/sublink/deep.nar", "dangling.nar", "nar/loop", "selfdir/top.narinfo"} {
				if _, err := st.Stat(t.Context(), key); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("Stat(%s) through a symlink: %v, want not found", key, err)
				}
				if r, err := st.GetRange(t.Context(), key, 1, 2); !errors.Is(err, storage.ErrNotFound) {
					if err == nil {
						r.Close()
					}
					t.Errorf("GetRange(%s) through a symlink: %v, want not found", key, err)
				}
			}
		})
	}
}
