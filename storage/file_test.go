package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

func TestFileConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		st, err := storage.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// TestFileListKeys: a keys-only listing of a cache-shaped tree names every
// regular file once, without attributes, skips symlinks and directories,
// stops when the caller stops, and reports a cancelled context.
func TestFileListKeys(t *testing.T) {
	testenv.SkipShort(t, "6000 fsynced puts")
	dir := t.TempDir()
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 3000 { // more than one batch, in two large directories
		for _, k := range []string{fmt.Sprintf("%05d.narinfo", i), fmt.Sprintf("nar/%05d.nar.xz", i)} {
			if _, err := st.Put(ctx, k, strings.NewReader(k), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			want[k] = true
		}
	}
	if err := os.Symlink(filepath.Join(dir, "00001.narinfo"), filepath.Join(dir, "link.narinfo")); err != nil {
		t.Fatal(err)
	}
	kl := st.(storage.KeyLister)
	got := map[string]bool{}
	for o, err := range kl.ListKeys(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if o.HasAttrs() {
			t.Fatalf("%s: keys-only listing has attributes", o.Key)
		}
		if got[o.Key] {
			t.Fatalf("%s listed twice", o.Key)
		}
		got[o.Key] = true
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("%s not listed", k)
		}
	}
	for k := range got {
		if !want[k] && !strings.HasPrefix(k, ".kiss/") {
			t.Fatalf("%s listed, but it is not an object", k)
		}
	}
	// ListParallel takes the driver's own batches, through a Counting
	// decorator, and names the same keys (counted once each).
	counting := storage.NewCounting(st)
	batched := map[string]bool{}
	for b, err := range storage.ListParallel(ctx, counting, "", storage.ParallelListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range b {
			if batched[o.Key] {
				t.Fatalf("%s listed twice in batches", o.Key)
			}
			batched[o.Key] = true
		}
	}
	if !maps.Equal(batched, got) {
		t.Fatalf("ListParallel named %d keys, ListKeys %d", len(batched), len(got))
	}
	if c := counting.Counts(); c["list"] != 1 || c["list-objects"] != int64(len(got)) {
		t.Fatalf("counts %v, want one listing of %d objects", c, len(got))
	}
	n := 0
	for _, err := range kl.ListKeys(ctx, "nar/") {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var last error
	for _, err := range kl.ListKeys(cctx, "") {
		last = err
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("cancelled listing ended with %v, want context.Canceled", last)
	}
}

// TestFileReaderFile: a reader hands its descriptor to an *os.File at the
// position reading reached, and a range stops at its length.
func TestFileReaderFile(t *testing.T) {
	st, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, "obj", strings.NewReader("0123456789"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Get(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4)
	if _, err := io.ReadFull(r, head); err != nil || string(head) != "0123" {
		t.Fatalf("read %q, %v", head, err)
	}
	f := r.(storage.FileReader).File()
	rest, err := io.ReadAll(f)
	if err != nil || string(rest) != "456789" {
		t.Fatalf("File() read %q, %v", rest, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rr, err := st.GetRange(ctx, "obj", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rr)
	rr.Close()
	if err != nil || string(b) != "234" {
		t.Fatalf("range read %q, %v", b, err)
	}
	if _, err := st.Get(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get(missing) = %v", err)
	}
	if _, err := st.Put(ctx, "nar/x.nar", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "nar"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat of a directory = %v, want ErrNotFound", err)
	}
}

// TestFileListLinksAndKeyBlocks: a listing, plain or with the pruner's
// splits, under any prefix, names every key exactly once; a directory that
// is a symbolic link is not listed, also when the prefix names it (`log/`:
// Stat and Get would not reach the keys behind it); a file named like a
// split's directory is a key; and keys built in shared blocks stay intact
// when names that do not match the prefix are dropped.
func TestFileListLinksAndKeyBlocks(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	elsewhere := filepath.Join(parent, "elsewhere")
	for _, d := range []string{filepath.Join(dir, "nar", "sub"), elsewhere} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var files []string
	for i := range 2500 { // several batches and key blocks per directory
		files = append(files, fmt.Sprintf("%05d.narinfo", i), fmt.Sprintf("nar/%05d.nar.xz", i), fmt.Sprintf("nar/b%05d.nar", i))
	}
	files = append(files, "nar/sub/deep.nar", "debuginfo") // a split's directory name as a file
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(elsewhere, "x.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "log")); err != nil { // log/ is a link: never listed
		t.Fatal(err)
	}
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, prefix := range []string{"", "nar/", "nar/b", "nar/0", "0", "log/", "debuginfo"} {
		var want []string
		for _, f := range files {
			if strings.HasPrefix(f, prefix) {
				want = append(want, f)
			}
		}
		slices.Sort(want)
		var plain []string
		for o, err := range storage.ListKeys(ctx, st, prefix) {
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(o.Key, ".kiss/") {
				plain = append(plain, o.Key)
			}
		}
		slices.Sort(plain)
		if !slices.Equal(plain, want) {
			t.Fatalf("prefix %q: a plain listing names %d keys, want %d", prefix, len(plain), len(want))
		}
		var split []string
		for b, err := range storage.ListParallel(ctx, st, prefix, storage.ParallelListOptions{Splits: nixcache.ListSplits()}) {
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range b {
				if !strings.HasPrefix(o.Key, ".kiss/") {
					split = append(split, o.Key)
				}
			}
		}
		slices.Sort(split)
		if !slices.Equal(split, want) {
			t.Fatalf("prefix %q: a listing with the splits names %d keys (%v…), want %d, each once", prefix, len(split), split[:min(3, len(split))], len(want))
		}
	}
}

// TestFileDeleteManyInParallel: DeleteMany does the same whether its
// unlinks go one after another or deleteWorkers at a time (the file driver
// spreads them when they are slow, see storage.UnlinkInParallel): every
// valid key is gone, every other file stays, each invalid key is an
// ErrInvalidKey, and an absent key is no error.
func TestFileDeleteManyInParallel(t *testing.T) {
	for _, parallel := range []bool{false, true} {
		t.Run(fmt.Sprint("parallel=", parallel), func(t *testing.T) {
			defer storage.UnlinkInParallel(parallel, 3)()
			root := t.TempDir()
			st, err := storage.OpenFile(root)
			if err != nil {
				t.Fatal(err)
			}
			var keys, keep []string
			for i := range 1500 {
				k := fmt.Sprintf("%032d.narinfo", i)
				switch i % 3 {
				case 1:
					k = fmt.Sprintf("nar/%d.nar.xz", i)
				case 2:
					k = fmt.Sprintf("log/%d-x.drv", i)
				}
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, k)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, k), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if i%10 == 0 {
					keep = append(keep, k)
				} else {
					keys = append(keys, k)
				}
			}
			bad := []string{"../escape", "nar//double", "nar"}
			keys = slices.Insert(keys, 700, bad...)
			keys = append(keys, "nar/absent.nar")
			err = st.DeleteMany(t.Context(), keys)
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Fatalf("DeleteMany: %v, want ErrInvalidKey", err)
			}
			for _, b := range bad {
				if !strings.Contains(err.Error(), b) {
					t.Errorf("the error does not name %q: %v", b, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(bad) {
				t.Errorf("%d errors, want %d: %v", n, len(bad), err)
			}
			for _, k := range keys {
				if _, err := os.Lstat(filepath.Join(root, k)); err == nil && !slices.Contains(bad, k) {
					t.Errorf("%s survived", k)
				}
			}
			for _, k := range keep {
				if _, err := os.Stat(filepath.Join(root, k)); err != nil {
					t.Errorf("%s, not asked for, is gone: %v", k, err)
				}
			}
			// A cancelled context stops it and says so.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := st.DeleteMany(ctx, keep); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled: %v", err)
			}
		})
	}
}

// TestFileGetOfANamedPipe: a named pipe at a key is not an object, and Get
// says so at once: opening it for reading used to wait for a writer that
// never comes (a FIFO at .kiss/memo/v2 hung kiss prune, lease held, and
// SIGTERM could not stop it).
func TestFileGetOfANamedPipe(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".kiss/memo"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"pipe.narinfo", ".kiss/memo/v2"} {
		if err := syscall.Mkfifo(filepath.Join(dir, key), 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			r, err := st.Get(context.Background(), key)
			if err == nil {
				r.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Get(%s) of a named pipe = %v, want ErrNotFound", key, err)
			}
		case <-time.After(5 * time.Second):
			// Unblock the open so the goroutine ends.
			if f, err := os.OpenFile(filepath.Join(dir, key), os.O_WRONLY, 0); err == nil {
				f.Close()
			}
			t.Fatalf("Get(%s) of a named pipe still blocked after 5 s", key)
		}
	}
}
