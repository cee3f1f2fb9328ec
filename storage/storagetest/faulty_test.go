package storagetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

func TestFaulty(t *testing.T) {
	ctx := context.Background()
	mem := storage.NewMem(nil)
	f := NewFaulty(mem)

	// Fail the 2nd create: not applied, transient.
	f.Inject(Fault{Op: OpPut, Cond: "create", Nth: 2, Fail: true})
	if _, err := f.Put(ctx, "a", strings.NewReader("1"), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatal(err)
	}
	_, err := f.Put(ctx, "b", strings.NewReader("2"), storage.PutOptions{IfNotExist: true})
	if !errors.Is(err, ErrInjected) || !storage.IsTransient(err) {
		t.Fatalf("2nd create: %v", err)
	}
	if _, err := mem.Stat(ctx, "b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("failed put was applied: %v", err)
	}
	if _, err := f.Put(ctx, "b", strings.NewReader("2"), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatalf("3rd create (fault spent): %v", err)
	}

	// Lose the response of a delete: applied, error returned.
	f.Inject(Fault{Op: OpDelete, KeyPrefix: "a", LoseResponse: true})
	if err := f.Delete(ctx, "a", storage.DeleteOptions{}); !IsInjected(err) {
		t.Fatalf("lost delete: %v", err)
	}
	if _, err := mem.Stat(ctx, "a"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("lost-response delete was not applied: %v", err)
	}

	// Custom error, every call, only for one key prefix; then Reset.
	f.Inject(Fault{Op: OpStat, KeyPrefix: "b", Times: -1, Fail: true, Err: storage.ErrConflict})
	for range 3 {
		if _, err := f.Stat(ctx, "b"); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("stat b: %v", err)
		}
	}
	if _, err := f.Stat(ctx, "nix-cache-info"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("other key affected: %v", err)
	}
	f.Reset()
	if _, err := f.Stat(ctx, "b"); err != nil {
		t.Fatalf("after Reset: %v", err)
	}

	// Delay honours the context.
	f.Inject(Fault{Op: OpGet, Delay: time.Hour})
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := f.Get(cctx, "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delayed get: %v", err)
	}
	// List failure is yielded, not panicked.
	f.Inject(Fault{Op: OpList, Fail: true})
	for _, err := range f.List(ctx, "") {
		if !IsInjected(err) {
			t.Fatalf("list: %v", err)
		}
	}
	if f.Calls(OpPut) != 3 || f.Calls(OpAny) < 10 || f.Fired() != 2 { // Fired counts since Reset
		t.Fatalf("calls put=%d any=%d fired=%d", f.Calls(OpPut), f.Calls(OpAny), f.Fired())
	}
}
