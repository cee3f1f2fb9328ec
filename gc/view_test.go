package gc_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// viewFence confirms always (the tests hold no lease).
type viewFence struct{}

func (viewFence) Confirm(context.Context) error { return nil }

func newView(t *testing.T, c *cache, opts gc.Options) *gc.View {
	t.Helper()
	v, err := gc.NewView(context.Background(), c.st, opts)
	if err != nil {
		t.Fatalf("NewView: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func chainNames(v *gc.View, c gc.Chain, names map[nixcache.Hash]string) []string {
	var out []string
	for _, s := range c.Steps {
		out = append(out, names[s.Hash])
	}
	return out
}

// shortest is v.ShortestChain, failing t on a read error.
func shortest(t *testing.T, v *gc.View, id gc.PathID, skip func(gc.PathID) bool) (gc.Chain, bool) {
	t.Helper()
	c, ok, err := v.ShortestChain(id, skip)
	if err != nil {
		t.Fatal(err)
	}
	return c, ok
}

func TestViewShortestChain(t *testing.T) {
	memVariants(t, func(t *testing.T, newMemCache func(testing.TB) *cache) {
		c := newMemCache(t)
		lib := c.add("lib")
		mid := c.add("mid", lib)
		long1 := c.add("long1", mid)
		app := c.add("app", long1, lib) // app → lib directly: the shortest chain
		other := c.add("other", mid)
		garbage := c.add("garbage", lib)
		c.root("web", app)
		c.root("ops", other)
		c.age(3 * time.Hour)
		names := map[nixcache.Hash]string{}
		for n, p := range c.paths {
			names[p.hash] = n
		}
		v := newView(t, c, gc.Options{})
		id, _ := v.Lookup(lib.hash)
		ch, ok := shortest(t, v, id, nil)
		if !ok {
			t.Fatal("lib not kept")
		}
		got := chainNames(v, ch, names)
		if !slices.Equal(got, []string{"app", "lib"}) || v.Markers()[ch.Marker].Source != "gcroots/web" {
			t.Errorf("chain %v from %s, want [app lib] from gcroots/web", got, v.Markers()[ch.Marker].Source)
		}
		id, _ = v.Lookup(mid.hash)
		ch, _ = shortest(t, v, id, nil)
		if got := chainNames(v, ch, names); !slices.Equal(got, []string{"other", "mid"}) {
			t.Errorf("mid chain %v, want [other mid]", got)
		}
		// Skipping "other" leaves the long way round.
		otherID, _ := v.Lookup(other.hash)
		ch, _ = shortest(t, v, id, func(p gc.PathID) bool { return p == otherID })
		if got := chainNames(v, ch, names); !slices.Equal(got, []string{"app", "long1", "mid"}) {
			t.Errorf("mid chain without other %v, want [app long1 mid]", got)
		}
		gid, ok := v.Lookup(garbage.hash)
		if !ok || v.Reachable(gid) {
			t.Fatal("garbage should be listed and unreachable")
		}
		if _, ok := shortest(t, v, gid, nil); ok {
			t.Error("garbage has a chain")
		}
	})
}

// TestRemoval: kiss rm's plan deletes a path's narinfo, .ls, log,
// realisation and NAR, refuses while a root keeps it, keeps a NAR another
// narinfo names, and counts a young narinfo as a root unless it is a target.
func TestRemoval(t *testing.T) {
	memVariants(t, func(t *testing.T, newMemCache func(testing.TB) *cache) {
		ctx := context.Background()
		c := newMemCache(t)
		lib := c.add("lib")
		app := c.add("app", lib)
		old := c.add("old", lib)
		c.put(nixcache.ListingKey(old.hash), []byte("{}"))
		c.put("realisations/sha256:abc!out.doi", []byte(`{"outPath":"`+old.base()+`"}`))
		c.put("realisations/sha256:def!out.doi", []byte(`{"outPath":"`+app.base()+`"}`))
		twin := c.add("twin")
		twin2 := &path{name: "twin2", hash: digest("path:twin2"), narKey: twin.narKey}
		c.putNarInfo(twin2, "")
		c.paths["twin2"] = twin2
		c.root("web", app)
		c.age(3 * time.Hour)

		v := newView(t, c, gc.Options{})
		_, err := v.Removal(ctx, []nixcache.Hash{lib.hash})
		var re *gc.RootedError
		if !errors.Is(err, gc.ErrRooted) || !errors.As(err, &re) || re.Root != "marker gcroots/web" || len(re.Chain.Steps) != 2 {
			t.Fatalf("removing lib: %v, want ErrRooted from gcroots/web via 2 paths", err)
		}
		if _, err := v.Removal(ctx, []nixcache.Hash{app.hash, lib.hash}); !errors.As(err, &re) || re.Hash != app.hash || len(re.Chain.Steps) != 1 {
			t.Fatalf("removing a marker's own path: %v, want refused by gcroots/web directly", err)
		}
		if _, err := v.Removal(ctx, []nixcache.Hash{digest("path:absent")}); !errors.Is(err, gc.ErrNotInCache) {
			t.Fatalf("removing an absent path: %v, want ErrNotInCache", err)
		}

		p, err := v.Removal(ctx, []nixcache.Hash{old.hash, twin.hash})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for d := range p.Deletions() {
			keys = append(keys, d.Key)
		}
		want := []string{old.narinfo(), twin.narinfo(), nixcache.ListingKey(old.hash), "realisations/sha256:abc!out.doi", old.narKey}
		if !sameSet(keys, want) {
			t.Fatalf("deletions %v, want %v", keys, want)
		}
		if keys[len(keys)-1] != old.narKey {
			t.Errorf("the NAR is not deleted last: %v", keys)
		}
		if _, err := p.Execute(ctx, viewFence{}, nil); err != nil {
			t.Fatal(err)
		}
		c.present(old, false)
		c.present(lib, true)
		c.present(app, true)
		if c.exists(twin.narinfo()) || !c.exists(twin.narKey) || !c.exists(twin2.narinfo()) {
			t.Error("twin: want its narinfo gone and the NAR twin2 still names kept")
		}
		if c.exists(nixcache.ListingKey(old.hash)) || c.exists("realisations/sha256:abc!out.doi") || !c.exists("realisations/sha256:def!out.doi") {
			t.Error("old's .ls and realisation should be gone, app's realisation kept")
		}

		// A young narinfo is a root, unless it is the one removed.
		newer := c.add("newer", lib)
		young := c.add("young", newer)
		_ = young
		v = newView(t, c, gc.Options{})
		if _, err := v.Removal(ctx, []nixcache.Hash{newer.hash}); !errors.As(err, &re) || re.Chain.Marker != -1 {
			t.Fatalf("removing what a young narinfo needs: %v, want refused by the young narinfo", err)
		}
		if _, err := v.Removal(ctx, []nixcache.Hash{newer.hash, young.hash}); err != nil {
			t.Fatalf("removing a young path with what it needs: %v", err)
		}
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestQuarantineIsNotANarinfo: a narinfo kiss verify --quarantine moved to
// .kiss/quarantine/ is kiss's own object to the pruner — never deleted,
// never counted or read as a narinfo (the path is absent) — whatever its age.
func TestQuarantineIsNotANarinfo(t *testing.T) {
	c := newMemCache(t)
	lib := c.add("lib")
	app := c.add("app", lib)
	c.root("web", app)
	moved := c.add("moved")
	q := nixcache.QuarantineKey(moved.hash)
	c.put(q, []byte("StorePath: "+moved.abs()+"\nURL: nar/gone.nar\n"))
	if err := c.st.Delete(context.Background(), moved.narinfo(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.age(30 * 24 * time.Hour)
	rep := c.prune(gc.Options{Grace: -1})
	if !c.exists(q) {
		t.Fatalf("the prune deleted the quarantined %s", q)
	}
	if n := rep.Listed[nixcache.KindNarInfo.String()].Objects; n != 2 {
		t.Errorf("listed narinfos %d, want 2 (the quarantined one is not a narinfo)", n)
	}
	c.present(app, true)
	c.present(lib, true)
}
