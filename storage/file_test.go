package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
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
