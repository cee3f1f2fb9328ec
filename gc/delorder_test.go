package gc

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// TestNarInfoDeletionsInListingOrder: a real prune on file:// deletes the
// garbage narinfos in the order the listing named them (the directory's own
// order, whose unlinks are cheaper: listingOrder), whether their positions
// fit one temporary file or are spread over many; a dry run deletes the same
// narinfos (in id order).
func TestNarInfoDeletionsInListingOrder(t *testing.T) {
	for _, chunk := range []int64{posChunk, 50 * posRecSize} {
		func() {
			defer func(c int64) { posChunk = c }(posChunk)
			posChunk = chunk
			dir := t.TempDir()
			old := time.Now().Add(-48 * time.Hour)
			for i := range 3000 {
				f := filepath.Join(dir, nixcache.NarInfoKey(testHash(i)))
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(f, old, old); err != nil {
					t.Fatal(err)
				}
			}
			st, err := storage.OpenFile(dir)
			if err != nil {
				t.Fatal(err)
			}
			var listed []string
			for o, err := range storage.ListKeys(t.Context(), st, "") {
				if err != nil {
					t.Fatal(err)
				}
				if k, _ := nixcache.Classify(o.Key); k == nixcache.KindNarInfo {
					listed = append(listed, o.Key)
				}
			}
			deleted := func(dry bool) []string {
				p, err := NewPlan(t.Context(), st, Options{AllowEmptyRoots: true, Grace: time.Hour, DryRun: dry})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				var keys []string
				for d := range p.Deletions() {
					if d.Kind == nixcache.KindNarInfo.String() {
						keys = append(keys, d.Key)
					}
				}
				return keys
			}
			got := deleted(false)
			if !slices.Equal(got, listed) {
				i := 0
				for i < min(len(got), len(listed)) && got[i] == listed[i] {
					i++
				}
				t.Fatalf("posChunk %d: %d narinfo deletions, %d listed; they part at #%d: not in listing order", chunk, len(got), len(listed), i)
			}
			dry := deleted(true)
			if slices.Equal(dry, listed) {
				t.Fatal("the dry run's id order is the listing order: the test shows nothing")
			}
			slices.Sort(dry)
			slices.Sort(got)
			if !slices.Equal(dry, got) {
				t.Fatalf("a dry run deletes %d narinfos, a real prune %d", len(dry), len(got))
			}
		}()
	}
}
