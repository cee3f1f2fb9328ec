package gc_test

import (
	"context"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/inventory"
	"github.com/kiss-cache/kiss/storage"
)

// TestInventoryNewbornsLive: a prune that lists from an S3 Inventory report
// (hours old in real life) keeps I3 for what changed after the report was
// taken, on versitygw, for a CSV and a Parquet report:
//
//   - a narinfo deleted and pushed again since (with its NAR) survives, and
//     so does the old path it references (a young narinfo is a root);
//   - a NAR the report lists as old but that was uploaded again since, its
//     narinfo not yet (an upload in flight), survives: the pruner stats
//     every object the report listed right before deleting it;
//   - an object created since is not in the report and is never deleted;
//   - garbage the report lists, unchanged since, is deleted.
func TestInventoryNewbornsLive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw and waits out a grace period")
	}
	for _, format := range []string{"CSV", "Parquet"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			testInventoryNewbornsLive(t, format)
		})
	}
}

func testInventoryNewbornsLive(t *testing.T, format string) {
	ctx := context.Background()
	const grace = 8 * time.Second
	c := newS3Cache(t)
	lib := c.add("lib")
	app := c.add("app", lib)
	c.root("web", app)
	q := c.add("q")
	x := c.add("x", q)
	g := c.add("g")
	h := c.add("h")
	c.settle()
	time.Sleep(grace + time.Second) // everything is older than the grace period now

	// The report: every object as of now.
	var objs []storage.Object
	for o, err := range c.st.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	taken, err := c.st.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dest := storage.NewMem(nil)
	key, err := inventory.Write(ctx, dest, "inventory", "cache", format, taken, objs, 0)
	if err != nil {
		t.Fatal(err)
	}
	report, err := inventory.Open(ctx, dest, key, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// After the report: x deleted and pushed again; h's NAR uploaded again
	// with its narinfo gone (a push in flight); a new NAR.
	for _, k := range []string{x.narinfo(), x.narKey, h.narinfo(), h.narKey} {
		if err := c.st.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.add("x", q)
	c.put(h.narKey, []byte("NAR of h"))
	fresh := "nar/1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.nar.zst"
	c.put(fresh, []byte("new"))

	rep, err := prune(c.st, gc.Options{Grace: grace, Snapshot: report})
	if err != nil {
		t.Fatal(err)
	}
	c.present(app, true)
	c.present(lib, true)
	c.present(x, true) // deleted and pushed again after the report
	c.present(q, true) // in the closure of the young x
	c.present(g, false)
	if c.exists(h.narinfo()) || !c.exists(h.narKey) {
		t.Errorf("h: narinfo present %v (want false), NAR uploaded again present %v (want true)", c.exists(h.narinfo()), c.exists(h.narKey))
	}
	if !c.exists(fresh) {
		t.Errorf("%s, created after the report, was deleted", fresh)
	}
	s := rep.Snapshot
	if s == nil || s.Recent < 1 || s.Checked < 2 || !s.Taken.Equal(report.Taken()) {
		t.Errorf("report %+v: want at least the NAR of h kept as recent, and g's checked", s)
	}
	if rep.Roots.Young != 1 {
		t.Errorf("%d young narinfos, want 1 (x)", rep.Roots.Young)
	}
	checkClosures(t, c.st)
}
