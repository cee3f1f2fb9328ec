package gc_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
)

// withURL rewrites p's narinfo with URL u (the NAR stays at p.narKey).
func (c *cache) withURL(p *path, u string) {
	c.t.Helper()
	key := p.narKey
	p.narKey = u
	c.putNarInfo(p, "")
	p.narKey = key
}

// TestNARURLAsClientsResolveIt: a `URL:` that is not in the plain
// "nar/<file>" form still names the cache's NAR when Nix resolves it there:
// "/nar/x" (Nix's file:// store reads <cache>/ + "/nar/x"; nginx merges the
// slashes), "../nar/x" (an HTTP client removes dot segments at the root of a
// cache served at /). Such a NAR was deleted while its rooted narinfo stayed
// (I2), exit 0, and kiss rm deleted it from under a rooted narinfo.
func TestNARURLAsClientsResolveIt(t *testing.T) { memVariants(t, testNARURLAsClientsResolveIt) }

func testNARURLAsClientsResolveIt(t *testing.T, newMemCache func(testing.TB) *cache) {
	for _, form := range []string{"/", "//", "../", "../../", "/../"} {
		t.Run(form, func(t *testing.T) {
			c := newMemCache(t)
			dep := c.add("dep")
			top := c.add("top", dep)
			c.withURL(dep, form+dep.narKey)
			c.root("r", top)
			garbage := c.add("garbage")
			c.withURL(garbage, form+garbage.narKey)
			for run := range 2 { // cold, then warm (the memo)
				c.prune(gc.Options{Grace: -1})
				c.present(dep, true)
				c.present(top, true)
				if run == 0 {
					c.present(garbage, false) // the control: such a NAR can go
				}
			}
		})
	}
	// A memo record whose narinfo named no NAR here is not trusted: the
	// narinfo is read again, so a memo written by a pruner that did not
	// count "/nar/x" as this cache's cannot lose that NAR after an upgrade.
	t.Run("memo", func(t *testing.T) {
		c := newMemCache(t)
		elsewhere := c.add("elsewhere")
		c.withURL(elsewhere, "https://cache.example.org/"+elsewhere.narKey)
		plain := c.add("plain")
		c.root("r", elsewhere, plain)
		c.prune(gc.Options{Grace: -1})
		sp := newSpy(c.st)
		rep, err := prune(sp, gc.Options{Grace: -1})
		if err != nil {
			t.Fatal(err)
		}
		if sp.gets[elsewhere.narinfo()] != 1 || sp.gets[plain.narinfo()] != 0 || rep.Memo.Hits != 1 {
			t.Fatalf("warm run: gets %v, memo hits %d; want the absolute-URL narinfo read again and only it", sp.gets, rep.Memo.Hits)
		}
	})
	// Such a URL keeps what it names if it is there, but does not require
	// it: clients disagree on where it points (a cache served at /cache/
	// makes "../nar/x" point outside it), so its absence is a warning, not
	// a refusal. With "../../etc/passwd" a prune refused (exit 4).
	t.Run("absent", func(t *testing.T) {
		c := newMemCache(t)
		for i, u := range []string{"../../etc/passwd", "/nar/gone.nar", "../nar/gone.nar"} {
			p := c.add(fmt.Sprint("p", i))
			c.withURL(p, u)
			c.root("r"+digest(u).String(), p)
		}
		rep := c.prune(gc.Options{Grace: -1})
		if rep.MissingNARs != 0 || len(rep.Warnings) < 3 {
			t.Fatalf("missing NARs %d, warnings %q; want 0 and one warning each", rep.MissingNARs, rep.Warnings)
		}
		// A plain URL still requires its NAR.
		p := c.add("plain")
		c.withURL(p, "nar/gone.nar")
		c.root("plain", p)
		if _, err := c.tryPrune(gc.Options{Grace: -1}); !errors.Is(err, gc.ErrIntegrity) {
			t.Fatalf("a plain URL whose NAR is missing: %v, want ErrIntegrity", err)
		}
	})
	// kiss rm: a NAR shared with a rooted narinfo that names it "/nar/x".
	t.Run("removal", func(t *testing.T) {
		c := newMemCache(t)
		kept := c.add("kept")
		c.withURL(kept, "/"+kept.narKey)
		c.root("r", kept)
		old := c.add("old")
		old.narKey = kept.narKey
		c.putNarInfo(old, "")
		p, err := newView(t, c, gc.Options{Grace: -1}).Removal(ctx, []nixcache.Hash{old.hash})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if _, err := p.Execute(ctx, viewFence{}, nil); err != nil {
			t.Fatal(err)
		}
		c.present(kept, true)
		if c.exists(old.narinfo()) {
			t.Error("the removed narinfo is still there")
		}
	})
}

// TestNamedObjectsKeptWhateverTheirKind: an object a reachable narinfo's
// URL names, or that the roots read as a marker, is kept whatever its key
// looks like. A NAR at "nar/….tmp" and a marker "releases/web.tmp" (a
// --roots prefix) were deleted as stale temp files: the NAR under its rooted
// narinfo (I2, exit 0), the marker in the very run that read it, so the
// next run lost what it rooted.
func TestNamedObjectsKeptWhateverTheirKind(t *testing.T) {
	memVariants(t, testNamedObjectsKeptWhateverTheirKind)
}

func testNamedObjectsKeptWhateverTheirKind(t *testing.T, newMemCache func(testing.TB) *cache) {
	c := newMemCache(t)
	tmpNAR := func(name string, refs ...*path) *path {
		p := &path{name: name, hash: digest("path:" + name), refs: refs, narKey: "nar/" + digest("nar:"+name).String() + ".nar.zst.tmp"}
		c.put(p.narKey, []byte("NAR of "+name))
		c.putNarInfo(p, "")
		return p
	}
	dep := tmpNAR("dep")
	c.root("r", c.add("top", dep))
	garbage := tmpNAR("garbage") // the control: its NAR goes
	released := c.add("released")
	c.put("releases/web.tmp", nixcache.FormatMarker([]string{released.abs()}))
	opts := gc.Options{Grace: -1, RootSources: []string{"releases/"}}
	for range 2 {
		if rep := c.prune(opts); rep.LateNARs != 0 || rep.MissingNARs != 0 {
			t.Errorf("late NARs %d, missing %d: the listed NAR is neither", rep.LateNARs, rep.MissingNARs)
		}
		c.present(dep, true)
		c.present(released, true)
		c.present(garbage, false)
		if !c.exists("releases/web.tmp") {
			t.Fatal("the marker releases/web.tmp was deleted")
		}
	}
	checkClosures(t, c.st)
}
