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
	eachResolver(t, func(t *testing.T) {
		st, _ := symlinkedCache(t)
		for _, key := range realKeys {
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
		for _, key := range symlinkKeys {
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

// Keys of symlinkedCache: real files, and keys through a symlink.
var (
	realKeys    = []string{"nar/real.nar", "nar/sub/deep.nar", "top.narinfo"}
	symlinkKeys = []string{"nar/out.nar", "nar/in.nar", "link.narinfo", "dirlink/real.nar", "outdir/x",
		"nar/sublink/deep.nar", "dangling.nar", "nar/loop", "selfdir/top.narinfo"}
)

// symlinkedCache is a cache whose tree holds symlinks of every kind (to a
// file or a directory, inside the cache or out of it, dangling, looping),
// and the directory it is in (with out/x, outside the cache).
func symlinkedCache(t *testing.T) (storage.Store, string) {
	t.Helper()
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
	return st, parent
}

// StatMany answers as Stat does, key by key, on a run that mixes real
// files, symlinks, absent and invalid keys across directories (it reuses
// one directory descriptor for a run, so a stale or followed one would
// show); through Counting too, which counts one stat per key.
func TestFileStatManyIsStat(t *testing.T) {
	eachResolver(t, func(t *testing.T) {
		st, _ := symlinkedCache(t)
		var keys []string
		for i := range max(len(realKeys), len(symlinkKeys)) {
			if i < len(symlinkKeys) {
				keys = append(keys, symlinkKeys[i])
			}
			if i < len(realKeys) {
				keys = append(keys, realKeys[i])
			}
		}
		keys = append(keys, "nar/absent.nar", "nar/real.nar", "nar/sub", "absent/x.nar", "../x", "nar/real.nar")
		counted := storage.NewCounting(st)
		for _, s := range []storage.Store{st, counted} {
			seen := 0
			err := storage.StatMany(t.Context(), s, keys, func(i int, got storage.Object, gotErr error) error {
				seen++
				want, wantErr := st.Stat(t.Context(), keys[i])
				if got != want || (gotErr == nil) != (wantErr == nil) || errors.Is(gotErr, storage.ErrNotFound) != errors.Is(wantErr, storage.ErrNotFound) {
					t.Errorf("StatMany %s = %+v, %v; Stat = %+v, %v", keys[i], got, gotErr, want, wantErr)
				}
				return nil
			})
			if err != nil || seen != len(keys) {
				t.Fatalf("StatMany: %v after %d of %d keys", err, seen, len(keys))
			}
		}
		if n := counted.Counts()["stat"]; n != int64(len(keys)) {
			t.Errorf("Counting counted %d stats for %d keys", n, len(keys))
		}
		stop := errors.New("stop")
		calls := 0
		if err := storage.StatMany(t.Context(), st, keys, func(int, storage.Object, error) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
			t.Errorf("StatMany after each failed: %v, %d calls", err, calls)
		}
	})
}

// DeleteMany and Delete never reach through a symlinked directory: the
// files behind dirlink/ and outdir/ (one outside the cache) survive, while
// a symlink that is itself a key's last component is removed, not its
// target; a conditional Delete sees a key behind a symlink as absent.
// (Before: unlinkat(2) relative to the root, or unlink(2) of the joined
// path, followed dirlink and outdir.)
func TestFileDeleteManyStaysInTheCache(t *testing.T) {
	eachResolver(t, func(t *testing.T) {
		for _, mode := range []string{"DeleteMany", "DeleteMany-parallel", "Delete"} {
			t.Run(mode, func(t *testing.T) {
				if mode == "DeleteMany-parallel" {
					defer storage.UnlinkInParallel(true, 1)()
				}
				testDeleteStaysInTheCache(t, mode)
			})
		}
	})
}

func testDeleteStaysInTheCache(t *testing.T, mode string) {
	st, parent := symlinkedCache(t)
	cache := filepath.Join(parent, "cache")
	del := func(keys []string) error {
		if mode != "Delete" {
			return st.DeleteMany(t.Context(), keys)
		}
		for _, k := range keys {
			if err := st.Delete(t.Context(), k, storage.DeleteOptions{}); err != nil {
				return err
			}
		}
		return nil
	}
	if mode == "Delete" {
		target, err := st.Stat(t.Context(), "nar/real.nar")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(t.Context(), "dirlink/real.nar", storage.DeleteOptions{IfMatch: target.ETag}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("conditional Delete through a symlinked directory: %v, want not found", err)
		}
	}
	if err := del([]string{"dirlink/real.nar", "outdir/x", "selfdir/top.narinfo", "nar/out.nar", "nar/absent.nar"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(cache, "nar", "real.nar"), filepath.Join(parent, "out", "x"), filepath.Join(cache, "top.narinfo")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s was deleted through a symlink: %v", f, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(cache, "nar", "out.nar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the symlink nar/out.nar itself was not deleted: %v", err)
	}
	if err := del(realKeys); err != nil {
		t.Fatal(err)
	}
	for _, k := range realKeys {
		if _, err := os.Stat(filepath.Join(cache, k)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived DeleteMany: %v", k, err)
		}
	}
}

// eachResolver runs fn with openat2(2) and again with the walk kernels
// without it get (storage.WithoutOpenat2).
func eachResolver(t *testing.T, fn func(t *testing.T)) {
	t.Run("openat2", fn)
	t.Run("walk", func(t *testing.T) {
		defer storage.WithoutOpenat2()()
		fn(t)
	})
}
