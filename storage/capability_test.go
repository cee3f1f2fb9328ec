package storage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// TestCapabilitiesThroughDecorators: optional capabilities are found
// through any chain of decorators (storage.As): Counting used to drop
// Syncer, Presigner and the rest; a decorator that implements one itself
// (Counting's ListKeys, which counts) is found first.
func TestCapabilitiesThroughDecorators(t *testing.T) {
	file, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	counting := storage.NewCounting(storagetest.NewFaulty(file))
	var st storage.Store = counting

	if _, ok := st.(storage.Syncer); ok {
		t.Fatal("test premise: Counting does not implement Syncer itself")
	}
	if _, ok := storage.As[storage.Syncer](st); !ok {
		t.Error("Syncer of the file store not found through Counting and Faulty")
	}
	if _, ok := storage.As[storage.SpecialLister](st); !ok {
		t.Error("SpecialLister not found")
	}
	if kl, ok := storage.As[storage.KeyLister](st); !ok || kl != storage.KeyLister(counting) {
		t.Errorf("KeyLister: %T, want Counting's own", kl)
	}
	if _, ok := storage.As[storage.Presigner](st); ok {
		t.Error("a file store presigns?")
	}
	if _, ok := storage.As[storage.Presigner](storage.Store(nil)); ok {
		t.Error("As on nil")
	}

	// Sync reaches the file store: an unsynced put, synced through the chain.
	ctx := context.Background()
	if _, err := st.Put(ctx, "nar/x.nar", strings.NewReader("x"), storage.PutOptions{Unsynced: true}); err != nil {
		t.Fatal(err)
	}
	if err := storage.Sync(ctx, st, "nar/x.nar"); err != nil {
		t.Fatal(err)
	}
	if err := storage.Sync(ctx, st, "nar/absent.nar"); err == nil {
		t.Error("Sync of an absent key through the chain: no error, so it never reached the file store")
	}
	// Keys-only listing through Counting is counted, and keys-only.
	for o, err := range storage.ListKeys(ctx, st, "") {
		if err != nil || o.HasAttrs() {
			t.Fatalf("%+v %v", o, err)
		}
	}
	if counting.Counts()["list"] != 1 {
		t.Errorf("counts %v", counting.Counts())
	}
}

// TestFaultyListKeysKeepsFaults: a fault injected on List also hits the
// keys-only listing (which would otherwise reach the inner store's ListKeys
// through Unwrap and bypass it).
func TestFaultyListKeysKeepsFaults(t *testing.T) {
	file, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := storagetest.NewFaulty(file)
	f.Inject(storagetest.Fault{Op: storagetest.OpList, Fail: true})
	var failed bool
	for _, err := range storage.ListKeys(context.Background(), f, "") {
		failed = failed || err != nil
	}
	if !failed {
		t.Fatal("the injected list fault did not reach ListKeys")
	}
}
