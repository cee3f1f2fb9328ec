package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

var ctx = context.Background()

// world: two rooted closures sharing a dependency, and garbage.
//
//	app1 → lib → libc        app2 → libc      garbage → junkdep
type world struct {
	*cache
	libc, lib, app1, app2, garbage, junkdep *path
}

func newWorld(c *cache) *world {
	w := &world{cache: c}
	w.libc = c.add("libc")
	w.lib = c.add("lib", w.libc)
	w.app1 = c.add("app1", w.lib)
	w.app2 = c.add("app2", w.libc)
	w.junkdep = c.add("junkdep")
	w.garbage = c.add("garbage", w.junkdep, w.libc)
	c.root("web1", w.app1)
	c.root("sub/web2", w.app2)
	c.put("nix-cache-info", []byte("StoreDir: /nix/store\n"))
	return w
}

// checkClosures asserts I1 and I2 over the whole store: every narinfo has its
// NAR and all its references.
func checkClosures(t *testing.T, st storage.Store) {
	t.Helper()
	for o, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := nixcache.Classify(o.Key); k != nixcache.KindNarInfo {
			continue
		}
		ni, err := nixcache.ParseNarInfo([]byte(readKey(t, st, o.Key)), "")
		if err != nil {
			t.Fatal(err)
		}
		if nk, _ := ni.NarKey(); !exists(t, st, nk) {
			t.Errorf("I2 violated: %s present without its NAR %s", o.Key, nk)
		}
		for _, r := range ni.References {
			if !exists(t, st, nixcache.NarInfoKey(r)) {
				t.Errorf("I1 violated: %s references missing %s", o.Key, r)
			}
		}
	}
}

func exists(t *testing.T, st storage.Store, key string) bool {
	_, err := st.Stat(ctx, key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestI1CompleteClosures(t *testing.T) {
	for name, mk := range map[string]func(testing.TB) *cache{"mem": newMemCache, "file": newFileCache, "s3": newS3Cache} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(mk(t))
			w.settle()
			rep := w.prune(gc.Options{Grace: -1})
			for _, p := range []*path{w.libc, w.lib, w.app1, w.app2} {
				w.present(p, true)
			}
			w.present(w.garbage, false)
			w.present(w.junkdep, false)
			checkClosures(t, w.st)
			if rep.Reachable.Objects != 4 || rep.Deleted.Objects != 4 || rep.NarInfoReads != 4 {
				t.Errorf("report: reachable %d deleted %d reads %d", rep.Reachable.Objects, rep.Deleted.Objects, rep.NarInfoReads)
			}
			if !w.exists("nix-cache-info") || !w.exists("gcroots/web1") || !w.exists("gcroots/sub/web2") {
				t.Error("never-touched objects were deleted")
			}
			// Warm, under the real lease: no narinfo read, nothing more deleted.
			sp := newSpy(w.st)
			lease, err := lockproto.AcquirePrune(ctx, w.st, lockproto.Options{Owner: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer lease.Release(ctx)
			p, err := gc.NewPlan(lease.Context(), sp, gc.Options{Grace: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			rep, err = p.Execute(lease.Context(), lease, nil)
			if err != nil || sp.narinfoGets() != 0 || rep.Memo.Hits != 4 || rep.Deleted.Objects != 0 {
				t.Fatalf("warm: err %v, narinfo GETs %d, memo hits %d, deleted %d", err, sp.narinfoGets(), rep.Memo.Hits, rep.Deleted.Objects)
			}
		})
	}
}

// TestReferencedPathSurvives: a path kept only through a References entry
// (not rooted itself) survives: the niks3 bare-hash bug class.
func TestReferencedPathSurvives(t *testing.T) { memVariants(t, testReferencedPathSurvives) }

func testReferencedPathSurvives(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	dep := c.add("only-referenced")
	top := c.add("top", dep)
	c.root("r", top)
	c.prune(gc.Options{Grace: -1})
	c.present(dep, true)
	c.present(top, true)
}

func TestI2NoDanglingNAR(t *testing.T) { memVariants(t, testI2NoDanglingNAR) }

func testI2NoDanglingNAR(t *testing.T, newMemCache func(testing.TB) *cache) {
	w := newWorld(newMemCache(t))
	sp := newSpy(w.st)
	if _, err := prune(sp, gc.Options{Grace: -1, BatchSize: 1}); err != nil {
		t.Fatal(err)
	}
	// Every narinfo delete comes before every NAR delete.
	lastInfo, firstNAR := -1, len(sp.deletes)
	for i, b := range sp.deletes {
		for _, k := range b {
			if strings.HasPrefix(k, "nar/") {
				firstNAR = min(firstNAR, i)
			} else {
				lastInfo = i
			}
		}
	}
	if lastInfo < 0 || firstNAR == len(sp.deletes) || lastInfo > firstNAR {
		t.Fatalf("delete order: last metadata batch %d, first NAR batch %d: %v", lastInfo, firstNAR, sp.deletes)
	}
	checkClosures(t, w.st)

	// A failed metadata batch stops the run before any NAR is deleted.
	w2 := newWorld(newMemCache(t))
	sp2 := newSpy(w2.st)
	boom := errors.New("injected delete failure")
	sp2.failDel = func(keys []string) error {
		if strings.HasSuffix(keys[0], ".narinfo") {
			return boom
		}
		return nil
	}
	if _, err := prune(sp2, gc.Options{Grace: -1}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	for _, b := range sp2.deletes {
		for _, k := range b {
			if strings.HasPrefix(k, "nar/") {
				t.Fatalf("NAR %s deleted after a failed narinfo batch", k)
			}
		}
	}
	checkClosures(t, w2.st)

	// NARs shared by several narinfos are kept while any keeper remains.
	c := newMemCache(t)
	kept := c.add("kept")
	dup := &path{name: "dup", hash: digest("path:dup"), narKey: kept.narKey}
	c.putNarInfo(dup, "")
	c.root("r", kept)
	c.prune(gc.Options{Grace: -1})
	if c.exists(dup.narinfo()) || !c.exists(kept.narKey) {
		t.Fatal("shared NAR: want dup's narinfo gone and the NAR kept")
	}
	// Orphan NARs (no narinfo) go.
	c.put("nar/orphan.nar.xz", []byte("x"))
	c.prune(gc.Options{Grace: -1})
	if c.exists("nar/orphan.nar.xz") {
		t.Fatal("orphan NAR kept")
	}
}

func TestI3NewbornsLive(t *testing.T) { memVariants(t, testI3NewbornsLive) }

func testI3NewbornsLive(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	oldDep := c.add("old-dep")
	rooted := c.add("rooted")
	c.root("r", rooted)
	c.put(".kiss/tmp/stale", []byte("t"))
	c.put(".tmp/0000000001", []byte("t"))
	c.put("nar/upload.nar.tmp", []byte("t"))
	c.age(3 * time.Hour)
	// An upload in flight by a writer that skipped the lock: its NAR, then
	// its narinfo, referencing an old unrooted path; plus a fresh temp file.
	newborn := c.add("newborn", oldDep)
	c.put("nar/inflight.nar.zst", []byte("half"))
	c.put(".kiss/tmp/fresh", []byte("t"))
	c.age(30 * time.Minute)

	rep := c.prune(gc.Options{Grace: time.Hour})
	c.present(newborn, true)
	c.present(oldDep, true) // kept: a young narinfo is a root
	if !c.exists("nar/inflight.nar.zst") || !c.exists(".kiss/tmp/fresh") {
		t.Error("young orphan NAR or temp file deleted")
	}
	for _, k := range []string{".kiss/tmp/stale", ".tmp/0000000001", "nar/upload.nar.tmp"} {
		if c.exists(k) {
			t.Errorf("stale temp file %s kept", k)
		}
	}
	if rep.Roots.Young != 1 {
		t.Errorf("young roots = %d", rep.Roots.Young)
	}
	c.age(time.Hour)
	c.prune(gc.Options{Grace: time.Hour})
	c.present(newborn, false)
	c.present(oldDep, false)
	if c.exists("nar/inflight.nar.zst") {
		t.Error("old orphan NAR kept")
	}
	c.present(rooted, true)
}

// TestI4FailClosed: every reason to refuse deletes nothing.
func TestI4FailClosed(t *testing.T) { memVariants(t, testI4FailClosed) }

func testI4FailClosed(t *testing.T, newMemCache func(testing.TB) *cache) {
	cases := []struct {
		name  string
		setup func(w *world, sp *spy) gc.Options
		want  error
	}{
		{"unparseable reachable narinfo", func(w *world, _ *spy) gc.Options {
			w.put(w.lib.narinfo(), []byte("StorePath: garbage\n"))
			return gc.Options{Grace: -1}
		}, gc.ErrIntegrity},
		{"unreadable reachable narinfo", func(w *world, sp *spy) gc.Options {
			sp.failGet = func(k string) error {
				if k == w.libc.narinfo() {
					return errors.New("injected read error")
				}
				return nil
			}
			return gc.Options{Grace: -1}
		}, gc.ErrIntegrity},
		{"narinfo describing another path", func(w *world, _ *spy) gc.Options {
			body := strings.ReplaceAll(readKey(t, w.st, w.lib.narinfo()), w.lib.hash.String(), w.junkdep.hash.String())
			w.put(w.lib.narinfo(), []byte(body))
			return gc.Options{Grace: -1}
		}, gc.ErrIntegrity},
		{"dangling reference", func(w *world, _ *spy) gc.Options {
			if err := w.st.Delete(ctx, w.libc.narinfo(), storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			return gc.Options{Grace: -1}
		}, gc.ErrIntegrity},
		{"missing NAR", func(w *world, _ *spy) gc.Options {
			if err := w.st.Delete(ctx, w.lib.narKey, storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			return gc.Options{Grace: -1}
		}, gc.ErrIntegrity},
		{"unreadable marker", func(w *world, sp *spy) gc.Options {
			sp.failGet = func(k string) error {
				if k == "gcroots/sub/web2" {
					return errors.New("injected 500")
				}
				return nil
			}
			return gc.Options{Grace: -1}
		}, gc.ErrRootsUnavailable},
		{"listing fails", func(_ *world, sp *spy) gc.Options {
			sp.failList = errors.New("injected list failure")
			return gc.Options{Grace: -1}
		}, gc.ErrRootsUnavailable},
		{"missing local root dir", func(*world, *spy) gc.Options {
			return gc.Options{Grace: -1, RootSources: []string{"/nonexistent/kiss-roots"}}
		}, gc.ErrRootsUnavailable},
		{"empty roots", func(w *world, _ *spy) gc.Options {
			for _, k := range []string{"gcroots/web1", "gcroots/sub/web2"} {
				if err := w.st.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			return gc.Options{Grace: -1}
		}, gc.ErrEmptyRoots},
		{"all markers expired", func(w *world, _ *spy) gc.Options {
			w.age(48 * time.Hour)
			return gc.Options{Grace: -1, RootMaxAge: 24 * time.Hour}
		}, gc.ErrEmptyRoots},
		{"a marker names no store path", func(w *world, _ *spy) gc.Options {
			w.put("gcroots/sub/web2", nil) // what a write cut short by a full disk leaves
			return gc.Options{Grace: -1}
		}, gc.ErrEmptyMarker},
		{"a marker line is cut short", func(w *world, _ *spy) gc.Options {
			// The first path survives, the second was being written when
			// the disk filled: what it meant to root must not go.
			full := w.app2.abs()
			w.put("gcroots/sub/web2", []byte(w.app1.abs()+"\n"+full[:len(full)-20]))
			return gc.Options{Grace: -1}
		}, gc.ErrEmptyMarker},
		{"a marker is not text", func(w *world, _ *spy) gc.Options {
			w.put("gcroots/sub/web2", []byte("\xff\xfe\x00"))
			return gc.Options{Grace: -1}
		}, gc.ErrEmptyMarker},
		{"a marker over the size limit", func(w *world, _ *spy) gc.Options {
			w.put("gcroots/huge", bytes.Repeat([]byte("\n"), nixcache.MaxMarkerSize+1))
			return gc.Options{Grace: -1}
		}, gc.ErrRootsUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(newMemCache(t))
			w.put("nar/orphan.nar", []byte("x"))
			sp := newSpy(w.st)
			opts := tc.setup(w, sp)
			before := w.keys()
			_, err := prune(sp, opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if len(sp.deletes) != 0 {
				t.Fatalf("deleted %v", sp.deletes)
			}
			if after := w.keys(); len(after) != len(before) {
				t.Fatalf("objects %d → %d", len(before), len(after))
			}
		})
	}
	// Escape hatches do what they say.
	w := newWorld(newMemCache(t))
	for _, k := range []string{"gcroots/web1", "gcroots/sub/web2"} {
		w.st.Delete(ctx, k, storage.DeleteOptions{})
	}
	w.prune(gc.Options{Grace: -1, AllowEmptyRoots: true})
	w.present(w.libc, false)
	if !w.exists("nix-cache-info") {
		t.Fatal("nix-cache-info deleted")
	}
	// --allow-empty-markers: the empty marker roots nothing, the other
	// marker's closure stays.
	w = newWorld(newMemCache(t))
	w.put("gcroots/sub/web2", nil)
	w.prune(gc.Options{Grace: -1, AllowEmptyMarkers: true})
	w.present(w.app1, true)
	w.present(w.app2, false)
}

// TestNARWrittenDuringListing: a writer that skips the lock puts a NAR,
// then its narinfo. A listing that passed the NAR's key before the NAR was
// written and reached the narinfo after it was written lists the narinfo
// without its NAR. The prune stats that NAR before it calls it missing: it
// keeps it, counts it, and deletes the garbage as usual.
func TestNARWrittenDuringListing(t *testing.T) { memVariants(t, testNARWrittenDuringListing) }

func testNARWrittenDuringListing(t *testing.T, newMemCache func(testing.TB) *cache) {
	w := newWorld(newMemCache(t))
	sp := newSpy(w.st)
	sp.unlisted = func(k string) bool { return k == w.lib.narKey }
	rep, err := prune(sp, gc.Options{Grace: -1})
	if err != nil {
		t.Fatalf("prune refused over a NAR written during the listing: %v", err)
	}
	if rep.LateNARs != 1 || rep.MissingNARs != 0 {
		t.Fatalf("late NARs %d, missing %d; want 1, 0", rep.LateNARs, rep.MissingNARs)
	}
	if !w.exists(w.lib.narKey) {
		t.Fatal("the late NAR was deleted")
	}
	w.present(w.lib, true)
	w.present(w.garbage, false)
	checkClosures(t, w.st)

	// A NAR that is really gone is still missing: refuse, delete nothing.
	w = newWorld(newMemCache(t))
	if err := w.st.Delete(ctx, w.lib.narKey, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sp = newSpy(w.st)
	rep, err = prune(sp, gc.Options{Grace: -1})
	if !errors.Is(err, gc.ErrIntegrity) || len(sp.deletes) != 0 {
		t.Fatalf("missing NAR: err %v, deletes %v, report %+v", err, sp.deletes, rep)
	}
}

// TestRefusedPlanReport: a refused plan still reports what it found (the
// JSON report and the metrics of a refused kiss prune come from it): the
// missing NAR and its warning, the roots; a refusal for no roots says how
// many markers there were. Such a plan is not executed.
func TestRefusedPlanReport(t *testing.T) {
	w := newWorld(newMemCache(t))
	if err := w.st.Delete(ctx, w.lib.narKey, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := gc.NewPlan(ctx, w.st, gc.Options{Grace: -1})
	if !errors.Is(err, gc.ErrIntegrity) || p == nil {
		t.Fatalf("missing NAR: plan %v, err %v; want a refused plan", p, err)
	}
	rep := p.Report()
	if rep.MissingNARs != 1 || rep.DanglingRefs != 0 || rep.Roots.Markers != 2 || rep.Reachable.Objects == 0 ||
		!slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, "its NAR is not in the cache") }) {
		t.Fatalf("refused plan's report: %+v", rep)
	}
	if _, err := p.Execute(ctx, &countFence{}, nil); !errors.Is(err, gc.ErrIntegrity) || !w.exists(w.garbage.narinfo()) {
		t.Fatalf("executing a refused plan: %v", err)
	}

	empty := newMemCache(t)
	empty.add("orphan")
	p, err = gc.NewPlan(ctx, empty.st, gc.Options{Grace: -1})
	if !errors.Is(err, gc.ErrEmptyRoots) || p == nil || p.Report().Roots.Markers != 0 || p.Report().Now.IsZero() {
		t.Fatalf("no roots: plan %v, err %v", p, err)
	}
}

// TestNarInfoGoneWhenStated: a narinfo deleted between the listing and its
// stat (by another tool, or a writer replacing it) is neither young nor
// deleted, on a warm run (whose listing stats every narinfo) as on a cold
// one; the rest of the garbage goes as usual.
func TestNarInfoGoneWhenStated(t *testing.T) { memVariants(t, testNarInfoGoneWhenStated) }

func testNarInfoGoneWhenStated(t *testing.T, newMemCache func(testing.TB) *cache) {
	for _, warm := range []bool{false, true} {
		w := newWorld(newMemCache(t))
		if warm {
			w.root("was", w.garbage)
			w.prune(gc.Options{Grace: -1}) // writes the memo
			w.st.Delete(ctx, "gcroots/was", storage.DeleteOptions{})
		}
		sp := newSpy(w.st)
		sp.statGone = func(k string) bool { return k == w.garbage.narinfo() }
		rep, err := prune(sp, gc.Options{Grace: -1})
		if err != nil {
			t.Fatalf("warm %v: %v", warm, err)
		}
		if warm != rep.Memo.Loaded {
			t.Fatalf("warm %v: memo loaded %v", warm, rep.Memo.Loaded)
		}
		if _, keysOnly := w.st.(keysOnlyLocal); !keysOnly {
			continue // the listing gave its age: no stat
		}
		for _, batch := range sp.deletes {
			if slices.Contains(batch, w.garbage.narinfo()) {
				t.Fatalf("warm %v: deleted %s, which its stat called gone", warm, w.garbage.narinfo())
			}
		}
		if !w.exists(w.garbage.narinfo()) {
			t.Fatalf("warm %v: %s is gone", warm, w.garbage.narinfo())
		}
		w.present(w.junkdep, false)
		w.present(w.app1, true)
	}
}

func readKey(t *testing.T, st storage.Store, key string) string {
	t.Helper()
	r, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// failAfter confirms n times, then reports a lost lease.
type failAfter struct{ n int }

var errLost = fmt.Errorf("test: %w", lockproto.ErrLeaseLost)

func (f *failAfter) Confirm(context.Context) error {
	if f.n <= 0 {
		return errLost
	}
	f.n--
	return nil
}

func TestI5Exclusion(t *testing.T) { memVariants(t, testI5Exclusion) }

func testI5Exclusion(t *testing.T, newMemCache func(testing.TB) *cache) {
	w := newWorld(newMemCache(t))
	sp := newSpy(w.st)
	p, err := gc.NewPlan(ctx, sp, gc.Options{Grace: -1, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Execute(ctx, nil, nil); !errors.Is(err, gc.ErrNoFence) {
		t.Fatalf("nil fence: %v", err)
	}
	rep, err := p.Execute(ctx, &failAfter{n: 2}, nil)
	if !errors.Is(err, gc.ErrFence) || !errors.Is(err, lockproto.ErrLeaseLost) {
		t.Fatalf("err = %v, want ErrFence wrapping ErrLeaseLost", err)
	}
	if len(sp.deletes) != 2 || rep.Deleted.Objects != 2 {
		t.Fatalf("deleted %d batches (%d objects) with 2 confirmations", len(sp.deletes), rep.Deleted.Objects)
	}
	if _, err := p.Execute(ctx, &countFence{}, nil); !errors.Is(err, gc.ErrExecuted) {
		t.Fatalf("second Execute: %v", err)
	}
	checkClosures(t, w.st)

	// With the real lease: a pruner whose lease was broken deletes nothing.
	w2 := newWorld(newMemCache(t))
	lease, err := lockproto.AcquirePrune(ctx, w2.st, lockproto.Options{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := gc.NewPlan(ctx, w2.st, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := w2.st.Delete(ctx, lease.Key(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := w2.keys()
	if _, err := p2.Execute(ctx, lease, nil); !errors.Is(err, lockproto.ErrLeaseLost) {
		t.Fatalf("broken lease: err = %v", err)
	}
	for k := range before {
		if !w2.exists(k) && k != gc.MemoKey {
			t.Errorf("%s deleted without a lease", k)
		}
	}
	// And one that holds it deletes, confirming before each batch.
	w3 := newWorld(newMemCache(t))
	lease3, err := lockproto.AcquirePrune(ctx, w3.st, lockproto.Options{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer lease3.Release(ctx)
	p3, err := gc.NewPlan(ctx, w3.st, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	if _, err := p3.Execute(ctx, lease3, nil); err != nil {
		t.Fatal(err)
	}
	w3.present(w3.garbage, false)
	if !w3.exists(lease3.Key()) {
		t.Error("the pruner deleted its own lease")
	}
}

// TestI6StorageTime: age is judged on the store's clock (here in 2031), not
// the host's: with the host clock, everything would look "from the future"
// and nothing would be old.
func TestI6StorageTime(t *testing.T) { memVariants(t, testI6StorageTime) }

func testI6StorageTime(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	old := c.add("old")
	keep := c.add("keep")
	c.root("r", keep)
	c.age(2 * time.Hour)
	fresh := c.add("fresh")
	c.age(10 * time.Minute)
	if c.clock.now().Before(time.Now().Add(24 * time.Hour)) {
		t.Fatal("test premise: store clock should be far ahead of the host's")
	}
	c.prune(gc.Options{Grace: time.Hour})
	c.present(old, false)
	c.present(fresh, true)
	c.present(keep, true)
	// Marker expiry too: the marker is 2h10m old on the store's clock.
	rep := c.prune(gc.Options{Grace: time.Hour, RootMaxAge: 2 * time.Hour, AllowEmptyRoots: true})
	if c.exists("gcroots/r") || rep.Roots.Expired != 1 {
		t.Fatalf("expired marker kept (expired=%d)", rep.Roots.Expired)
	}
	c.present(keep, false)
}

func TestMemo(t *testing.T) { memVariants(t, testMemo) }

func testMemo(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	w := newWorld(c)
	sp := newSpy(c.st)
	// Cold: every reachable narinfo read once; the memo is written.
	rep, err := prune(sp, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.narinfoGets(); got != 4 || rep.NarInfoReads != 4 || !rep.Memo.Saved {
		t.Fatalf("cold: %d narinfo GETs, report %d, saved %v", got, rep.NarInfoReads, rep.Memo.Saved)
	}
	// Warm: no narinfo read at all.
	sp = newSpy(c.st)
	rep, err = prune(sp, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.narinfoGets(); got != 0 || rep.Memo.Hits != 4 {
		t.Fatalf("warm: %d narinfo GETs, %d memo hits", got, rep.Memo.Hits)
	}
	// A replaced narinfo is noticed in the same run: lib now also references
	// a new path, which must survive.
	extra := c.add("extra")
	w.lib.refs = append(w.lib.refs, extra)
	c.putNarInfo(w.lib, "")
	sp = newSpy(c.st)
	_, err = prune(sp, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	c.present(extra, true)
	if sp.gets[w.lib.narinfo()] != 1 || sp.narinfoGets() != 2 {
		t.Fatalf("changed narinfo: gets %v", sp.gets)
	}
	// A narinfo deleted out of band is noticed in the same run (its
	// referrer now dangles: refuse).
	c.st.Delete(ctx, extra.narinfo(), storage.DeleteOptions{})
	if _, err := prune(c.st, gc.Options{Grace: -1}); !errors.Is(err, gc.ErrIntegrity) {
		t.Fatalf("deleted narinfo behind the memo: %v", err)
	}
	w.lib.refs = w.lib.refs[:1]
	c.putNarInfo(w.lib, "")
	// A corrupt memo is rebuilt, with a warning.
	c.put(gc.MemoKey, []byte("KISSMEMO\x01garbage"))
	rep = c.prune(gc.Options{Grace: -1})
	if rep.Memo.Loaded || !rep.Memo.Saved || len(rep.Warnings) == 0 {
		t.Fatalf("corrupt memo: loaded %v saved %v warnings %v", rep.Memo.Loaded, rep.Memo.Saved, rep.Warnings)
	}
	rep = c.prune(gc.Options{Grace: -1})
	if !rep.Memo.Loaded || rep.NarInfoReads != 0 {
		t.Fatalf("rebuilt memo not used: %+v", rep.Memo)
	}
	// Deleting the memo is safe.
	c.st.Delete(ctx, gc.MemoKey, storage.DeleteOptions{})
	rep = c.prune(gc.Options{Grace: -1})
	if rep.NarInfoReads != 4 {
		t.Fatalf("after memo delete: %d reads", rep.NarInfoReads)
	}
	checkClosures(t, c.st)
	// Truncations of a valid memo are all rejected (checksum), never misread.
	data := []byte(readKey(t, c.st, gc.MemoKey))
	for _, n := range []int{0, 5, len(data) / 2, len(data) - 1} {
		c.put(gc.MemoKey, data[:n])
		rep = c.prune(gc.Options{Grace: -1})
		if rep.Memo.Loaded {
			t.Fatalf("memo truncated to %d bytes was loaded", n)
		}
	}
}

func TestMetadataKinds(t *testing.T) { memVariants(t, testMetadataKinds) }

func testMetadataKinds(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	drv := c.add("app.drv")
	out := &path{name: "app", hash: digest("path:app"), narKey: "nar/app.nar.xz", deriv: drv}
	c.put(out.narKey, []byte("n"))
	c.putNarInfo(out, "")
	gone := c.add("gone")
	c.root("r", out)
	for _, p := range []*path{out, gone} {
		c.put(nixcache.ListingKey(p.hash), []byte("{}"))
	}
	// Logs: the deriver of a kept path keeps its log, even if the .drv
	// were not in the cache; others go; unparseable names stay.
	orphanDrv := digest("path:orphan.drv").String() + "-orphan.drv"
	c.put("log/"+drv.base(), []byte("log"))
	c.put("log/"+orphanDrv, []byte("log"))
	c.put("log/not-a-store-path", []byte("log"))
	// Realisations and build traces: kept while their output is reachable.
	c.put("realisations/sha256:aa!out.doi", []byte(`{"id":"sha256:aa!out","outPath":"`+out.base()+`","signatures":[]}`))
	c.put("realisations/sha256:bb!out.doi", []byte(`{"id":"sha256:bb!out","outPath":"`+gone.base()+`","signatures":[]}`))
	c.put("realisations/sha256:cc!out.doi", []byte(`not json`))
	c.put("build-trace-v2/"+drv.base()+"/out.doi", []byte(`{"outPath":"`+out.base()+`","signatures":[]}`))
	c.put("build-trace-v2/"+orphanDrv+"/out.doi", []byte(`{"key":{},"value":{"outPath":"`+gone.base()+`"}}`))
	// Debuginfo: kept while the NAR it points into is kept.
	c.put("debuginfo/aaaa", []byte(`{"archive":"../`+out.narKey+`","member":"x"}`))
	c.put("debuginfo/bbbb", []byte(`{"archive":"../`+gone.narKey+`","member":"x"}`))
	c.put("debuginfo/cccc", []byte(`{`))
	// Never touched.
	never := []string{"nix-cache-info", "gcroots/.lock/prune", "gcroots/.job.tmp", ".kiss/other", "index.html", "sub/x.narinfo", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo"}
	for _, k := range never {
		c.put(k, []byte("x"))
	}
	c.age(time.Hour)
	rep := c.prune(gc.Options{Grace: -1})

	keep := []string{nixcache.ListingKey(out.hash), "log/" + drv.base(), "log/not-a-store-path",
		"realisations/sha256:aa!out.doi", "realisations/sha256:cc!out.doi", "build-trace-v2/" + drv.base() + "/out.doi",
		"debuginfo/aaaa", "debuginfo/cccc", out.narKey, drv.narKey}
	gone2 := []string{nixcache.ListingKey(gone.hash), "log/" + orphanDrv, "realisations/sha256:bb!out.doi",
		"build-trace-v2/" + orphanDrv + "/out.doi", "debuginfo/bbbb", gone.narKey, gone.narinfo()}
	for _, k := range append(keep, never...) {
		if !c.exists(k) {
			t.Errorf("%s deleted, want kept", k)
		}
	}
	for _, k := range gone2 {
		if c.exists(k) {
			t.Errorf("%s kept, want deleted", k)
		}
	}
	if rep.Deleted.Objects != int64(len(gone2)) {
		t.Errorf("deleted %d, want %d", rep.Deleted.Objects, len(gone2))
	}
}

func TestRootSources(t *testing.T) { memVariants(t, testRootSources) }

func testRootSources(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	a := c.add("a")
	b := c.add("b")
	d := c.add("d")
	x := c.add("x")
	c.root("r", a)
	c.put("releases/v1", nixcache.FormatMarker([]string{b.abs()}))
	c.put("releases/.hidden", nixcache.FormatMarker([]string{x.abs()}))
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "deep", "m"), nixcache.FormatMarker([]string{d.abs() + "/bin/d", "junk line"}), 0o644)
	os.WriteFile(filepath.Join(dir, ".ignored"), nixcache.FormatMarker([]string{x.abs()}), 0o644)
	// The junk line stops a prune unless the operator allows it; allowed,
	// the marker roots the paths it does name.
	rep := c.prune(gc.Options{Grace: -1, RootSources: []string{"releases", dir}, AllowEmptyMarkers: true})
	for _, p := range []*path{a, b, d} {
		c.present(p, true)
	}
	c.present(x, false)
	if rep.Roots.Markers != 3 || rep.Roots.Paths != 3 {
		t.Errorf("roots %+v", rep.Roots)
	}
	if !c.exists("releases/v1") {
		t.Error("extra-prefix marker deleted")
	}
}

func TestDryRunPlanDeletesNothing(t *testing.T) { memVariants(t, testDryRunPlanDeletesNothing) }

func testDryRunPlanDeletesNothing(t *testing.T, newMemCache func(testing.TB) *cache) {
	w := newWorld(newMemCache(t))
	before := w.keys()
	p, err := gc.NewPlan(ctx, w.st, gc.Options{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var keys []string
	for d := range p.Deletions() {
		keys = append(keys, d.Key)
	}
	slices.Sort(keys)
	want := []string{w.garbage.narinfo(), w.junkdep.narinfo(), w.garbage.narKey, w.junkdep.narKey}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("plan deletes %v, want %v", keys, want)
	}
	if r := p.Report(); r.DeleteTotal.Objects != 4 || r.Deleted.Objects != 0 {
		t.Fatalf("report %+v", r.DeleteTotal)
	}
	if after := w.keys(); len(after) != len(before) {
		t.Fatal("plan changed the store")
	}
}

func TestRootsRegistry(t *testing.T) { memVariants(t, testRootsRegistry) }

func testRootsRegistry(t *testing.T, newMemCache func(testing.TB) *cache) {
	w := newWorld(newMemCache(t))
	if _, err := roots.Add(ctx, w.st, "ci/main", []string{w.garbage.abs()}, ""); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", ".lock/x", "a/../b", "x/.y"} {
		if _, err := roots.Add(ctx, w.st, bad, []string{w.garbage.abs()}, ""); err == nil {
			t.Errorf("AddRoot(%q) accepted", bad)
		}
	}
	if _, err := roots.Add(ctx, w.st, "bad", []string{"not-a-store-path"}, ""); err == nil {
		t.Error("AddRoot accepted a non store path")
	}
	w.age(time.Hour)
	infos, err := gc.ListRoots(ctx, w.st, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]gc.RootInfo{}
	for _, r := range infos {
		got[r.Source] = r
	}
	if r := got["gcroots/web1"]; r.ClosurePaths != 3 || r.ClosureBytes != uint64(len("NAR of app1")+len("NAR of lib")+len("NAR of libc")) || time.Duration(r.Age) != time.Hour {
		t.Errorf("web1: %+v", r)
	}
	if r := got["gcroots/ci/main"]; r.ClosurePaths != 3 {
		t.Errorf("ci/main: %+v", r)
	}
	w.prune(gc.Options{Grace: -1})
	w.present(w.garbage, true)
	if err := roots.Remove(ctx, w.st, "ci/main"); err != nil {
		t.Fatal(err)
	}
	if err := roots.Remove(ctx, w.st, "ci/main"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second rm: %v", err)
	}
	w.prune(gc.Options{Grace: -1})
	w.present(w.garbage, false)
}

// TestDeepChainAndConcurrency walks a long chain and a wide fan-out with
// many workers (run with -race).
func TestDeepChainAndConcurrency(t *testing.T) { memVariants(t, testDeepChainAndConcurrency) }

func testDeepChainAndConcurrency(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	prev := c.add("chain-0")
	for i := 1; i < 300; i++ {
		prev = c.add(fmt.Sprintf("chain-%d", i), prev)
	}
	var wide []*path
	for i := 0; i < 200; i++ {
		wide = append(wide, c.add(fmt.Sprintf("leaf-%d", i), prev))
	}
	top := c.add("top", wide...)
	c.root("r", top)
	for i := 0; i < 100; i++ {
		c.add(fmt.Sprintf("junk-%d", i), top)
	}
	rep := c.prune(gc.Options{Grace: -1, Concurrency: 32})
	if rep.Reachable.Objects != 501 || rep.Deleted.Objects != 200 {
		t.Fatalf("reachable %d deleted %d", rep.Reachable.Objects, rep.Deleted.Objects)
	}
	checkClosures(t, c.st)
}

// TestColdWalkRequests: a cold walk reads each reachable narinfo once, and
// spends no request on derivers that are not in the cache (most are not),
// even though it starts before the listing is complete.
func TestColdWalkRequests(t *testing.T) {
	c := newMemCache(t)
	var top []*path
	for i := 0; i < 50; i++ {
		dep := c.add(fmt.Sprintf("dep-%d", i))
		p := &path{name: fmt.Sprintf("out-%d", i), hash: digest(fmt.Sprintf("path:out-%d", i)), refs: []*path{dep},
			deriv: &path{name: fmt.Sprintf("out-%d.drv", i), hash: digest(fmt.Sprintf("path:out-%d.drv", i))}}
		p.narKey = "nar/" + p.hash.String() + ".nar"
		c.put(p.narKey, []byte("n"))
		c.putNarInfo(p, "")
		top = append(top, p)
	}
	inCache := c.add("in-cache.drv")
	top[0].deriv = inCache
	c.putNarInfo(top[0], "")
	c.root("r", top...)
	// A log of a deriver that is not in the cache is kept; an orphan log goes.
	c.put("log/"+top[1].deriv.base(), []byte("log"))
	c.put("log/"+digest("path:nobody.drv").String()+"-nobody.drv", []byte("log"))
	sp := newSpy(c.st)
	rep, err := prune(sp, gc.Options{Grace: -1, Concurrency: 16})
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.narinfoGets(); got != 101 || rep.Reachable.Objects != 101 {
		t.Fatalf("narinfo GETs %d, reachable %d; want 101 (50 outputs, 50 deps, 1 deriver in the cache)", got, rep.Reachable.Objects)
	}
	c.present(inCache, true)
	if !c.exists("log/"+top[1].deriv.base()) || c.exists("log/"+digest("path:nobody.drv").String()+"-nobody.drv") {
		t.Error("logs: want the absent deriver's log kept and the orphan log deleted")
	}
	for _, p := range top {
		c.present(p, true)
	}
}

// TestExpiredMarkerDeletedOnlyIfUnchanged: an expired marker is deleted by
// a conditional delete on the version listed; one rewritten since is kept.
func TestExpiredMarkerDeletedOnlyIfUnchanged(t *testing.T) {
	memVariants(t, testExpiredMarkerDeletedOnlyIfUnchanged)
}

func testExpiredMarkerDeletedOnlyIfUnchanged(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	a := c.add("a")
	keep := c.add("keep")
	c.root("old", a)
	c.root("stale", a)
	c.age(48 * time.Hour)
	c.root("fresh", keep)
	p, err := gc.NewPlan(ctx, c.st, gc.Options{Grace: time.Hour, RootMaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c.root("stale", a) // rewritten after the plan: fresh again
	rep, err := p.Execute(ctx, &countFence{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.exists("gcroots/old") || !c.exists("gcroots/stale") || !c.exists("gcroots/fresh") {
		t.Fatal("want old deleted, stale (rewritten) and fresh kept")
	}
	if rep.Roots.Expired != 2 || len(rep.Warnings) == 0 {
		t.Fatalf("expired %d, warnings %v", rep.Roots.Expired, rep.Warnings)
	}
	c.present(keep, true)
}

// TestOverlongKeyUntouched: a file below the cache whose key is longer than
// any store operation accepts (a deep path) is listed but never touched, and
// does not stop the prune.
func TestOverlongKeyUntouched(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &cache{t: t, st: st, paths: map[string]*path{}}
	keep := c.add("keep")
	c.root("r", keep)
	deep := filepath.Join(dir, "nar", strings.Repeat("d", 200), strings.Repeat("e", 200), strings.Repeat("f", 200), strings.Repeat("g", 200), strings.Repeat("h", 200), strings.Repeat("i", 200))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(deep, "x.nar")
	if err := os.WriteFile(long, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(long, old, old)
	c.prune(gc.Options{Grace: -1})
	if _, err := os.Stat(long); err != nil {
		t.Fatalf("over-long key touched: %v", err)
	}
	c.present(keep, true)
}

// TestSmallBucketListRequests: pruning a bucket of a handful of objects on a real
// S3 server costs a handful of ListObjectsV2 requests, not one per range of
// the parallel listing (it made 195 before it became adaptive: a small cache
// pruned hourly paid ~140k LISTs a month).
func TestSmallBucketListRequests(t *testing.T) {
	c := newS3Cache(t)
	lib := c.add("lib")
	app := c.add("app", lib)
	c.add("garbage", lib)
	c.root("host", app)
	counted := storage.NewCounting(c.st)
	if _, err := prune(counted, gc.Options{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	n := counted.Counts()
	// gcroots/ (the markers), then the whole bucket in one page.
	if lists := n["http:"+storagetest.S3ListObjects]; lists == 0 || lists > 3 {
		t.Fatalf("%d ListObjectsV2 requests for a bucket of %d objects, want 1 to 3 (counts %v)", lists, len(c.keys()), n)
	}
	t.Logf("%d objects: %d ListObjectsV2 requests", len(c.keys()), n["http:"+storagetest.S3ListObjects])
}
