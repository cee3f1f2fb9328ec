package gc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// TestQuarantinedRootRefuses: a marker naming a path whose narinfo kiss
// verify --quarantine moved aside (its NAR was missing) makes the prune
// refuse, as the missing NAR did before the quarantine. The walk cannot
// see the quarantined narinfo's references: the prune deleted the intact
// paths only that path kept (the marker's closure, which --restore needs
// back), so a quarantine lost what it was meant to keep.
func TestQuarantinedRootRefuses(t *testing.T) {
	c := newMemCache(t)
	lib := c.add("lib")
	tool := c.add("tool", lib)
	c.root("ops", tool)
	c.age(3 * gc.DefaultGrace)
	ctx := context.Background()
	// What verify --quarantine does to a narinfo whose NAR is missing.
	if err := c.st.Delete(ctx, tool.narKey, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.put(nixcache.QuarantineKey(tool.hash), []byte("quarantined narinfo"))
	if err := c.st.Delete(ctx, tool.narinfo(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// kiss rm refuses too: lib is kept by the quarantined path.
	if p, err := newView(t, c, gc.Options{Grace: -1}).Removal(ctx, []nixcache.Hash{lib.hash}); !errors.Is(err, gc.ErrIntegrity) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("kiss rm of what a quarantined root references: err %v, want ErrIntegrity", err)
	}

	rep, err := c.tryPrune(gc.Options{Grace: -1})
	if !errors.Is(err, gc.ErrIntegrity) {
		t.Fatalf("prune with a quarantined root: err %v, want ErrIntegrity; report %+v", err, rep)
	}
	c.present(lib, true)
	if !c.exists(lib.narKey) {
		t.Error("lib's NAR deleted")
	}
	// --allow-dangling prunes anyway, as for any missing NAR.
	c.prune(gc.Options{Grace: -1, AllowDangling: true})
	c.present(lib, false)
	if !c.exists(nixcache.QuarantineKey(tool.hash)) {
		t.Error("quarantined narinfo deleted")
	}
}
