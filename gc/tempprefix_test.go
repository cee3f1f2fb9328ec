package gc_test

import (
	"testing"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// TestFileDriverTempIsCollectable: the file driver stages writes under
// storage.TempPrefix, and the pruner collects stale files only where
// nixcache classifies them as temp (KissTempPrefix). The two packages may
// not import each other (storage and nixcache import nothing of kiss), so
// the prefix is written in both; this test keeps them one rule: a crash's
// staging file must be collectable, never an object the pruner keeps (or
// worse, deletes as something else) forever.
func TestFileDriverTempIsCollectable(t *testing.T) {
	if storage.TempPrefix != nixcache.KissTempPrefix {
		t.Fatalf("storage.TempPrefix %q != nixcache.KissTempPrefix %q", storage.TempPrefix, nixcache.KissTempPrefix)
	}
	kind, _ := nixcache.Classify(storage.TempPrefix + "0123456789abcdef")
	if kind != nixcache.KindTemp || !kind.Rules().Prunable {
		t.Fatalf("a staging file of the file driver classifies as %v, want a prunable temp file", kind)
	}
}
