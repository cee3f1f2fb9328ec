package explain_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/explain"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

type memCache struct {
	t   *testing.T
	st  storage.Store
	now time.Time
}

func newCache(t *testing.T) *memCache {
	c := &memCache{t: t, now: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
	c.st = storage.NewMem(func() time.Time { return c.now })
	return c
}

func hashOf(name string) nixcache.Hash {
	sum := sha256.Sum256([]byte(name))
	var h nixcache.Hash
	copy(h[:], sum[:])
	h, _ = nixcache.ParseHash(h.String())
	return h
}

func base(name string) string { return hashOf(name).String() + "-" + name }

func (c *memCache) put(key, body string) {
	c.t.Helper()
	if _, err := c.st.Put(context.Background(), key, bytes.NewReader([]byte(body)), storage.PutOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// add puts a path with a NAR of size bytes and references.
func (c *memCache) add(name string, size int, refs ...string) {
	var rs []string
	for _, r := range refs {
		rs = append(rs, base(r))
	}
	nar := "nar/" + hashOf("nar:"+name).String() + ".nar"
	c.put(nar, strings.Repeat("x", size))
	c.put(nixcache.NarInfoKey(hashOf(name)), fmt.Sprintf("StorePath: /nix/store/%s\nURL: %s\nFileSize: %d\nNarSize: %d\nReferences: %s\n",
		base(name), nar, size, size, strings.Join(rs, " ")))
}

func (c *memCache) view(opts gc.Options) *gc.View {
	c.t.Helper()
	v, err := gc.NewView(context.Background(), c.st, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(v.Close)
	return v
}

func TestUsageAndWhy(t *testing.T) {
	c := newCache(t)
	c.add("libc", 1000)
	c.add("ssl", 200, "libc")
	c.add("web", 30, "ssl", "libc")
	c.add("db", 50, "libc")
	c.add("tool", 7)
	c.add("junk", 99, "libc")
	c.put("gcroots/web", "/nix/store/"+base("web")+"\n")
	c.put("gcroots/db", "/nix/store/"+base("db")+"\n/nix/store/"+base("absent")+"\n")
	c.now = c.now.Add(3 * time.Hour) // everything is old…
	c.add("young", 5, "tool")        // …but this upload in flight.

	u, err := explain.Usage(c.view(gc.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	byRoot := map[string]explain.RootUsage{}
	for _, r := range u.Roots {
		byRoot[r.Root] = r
	}
	check := func(root string, closure, unique explain.Size, missing int) {
		t.Helper()
		r, ok := byRoot[root]
		if !ok {
			t.Fatalf("no row for %s in %+v", root, u.Roots)
		}
		if r.Closure != closure || r.Unique != unique || r.Missing != missing ||
			r.Shared != (explain.Size{Paths: closure.Paths - unique.Paths, Bytes: closure.Bytes - unique.Bytes}) {
			t.Errorf("%s: %+v, want closure %+v unique %+v missing %d", root, r, closure, unique, missing)
		}
	}
	check("gcroots/web", explain.Size{Paths: 3, Bytes: 1230}, explain.Size{Paths: 2, Bytes: 230}, 0)
	check("gcroots/db", explain.Size{Paths: 2, Bytes: 1050}, explain.Size{Paths: 1, Bytes: 50}, 1)
	check(explain.YoungRoot, explain.Size{Paths: 2, Bytes: 12}, explain.Size{Paths: 2, Bytes: 12}, 0)
	if u.Roots[0].Root != "gcroots/web" {
		t.Errorf("rows not sorted by closure size: %+v", u.Roots)
	}
	if u.Kept != (explain.Size{Paths: 6, Bytes: 1292}) || u.Unkept != 1 {
		t.Errorf("kept %+v unkept %d, want 6 paths 1292 bytes, 1 unkept", u.Kept, u.Unkept)
	}

	ctx := context.Background()
	v := c.view(gc.Options{})
	a, err := explain.Why(ctx, c.st, v, hashOf("libc"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Kept || a.Marker == "" || len(a.Chain) != 2 || a.Chain[1].Path != "/nix/store/"+base("libc") || a.Chain[1].Via != "reference" {
		t.Errorf("why libc: %+v", a)
	}
	a, err = explain.Why(ctx, c.st, v, hashOf("tool"))
	if err != nil || !a.Kept || a.Marker != "" || !strings.Contains(a.Root, "young narinfo") {
		t.Errorf("why tool: %+v %v, want kept by the young narinfo", a, err)
	}
	a, err = explain.Why(ctx, c.st, v, hashOf("junk"))
	if err != nil || a.Kept || !a.DeletableAt.Equal(a.ModTime.Add(2*time.Hour)) || a.Path != "/nix/store/"+base("junk") {
		t.Errorf("why junk: %+v %v, want unkept, deletable 2h after its mtime", a, err)
	}
	if _, err := explain.Why(ctx, c.st, v, hashOf("absent")); err == nil {
		t.Error("why absent: no error")
	}
	// An expired marker roots nothing.
	if u, err = explain.Usage(c.view(gc.Options{RootMaxAge: time.Hour})); err != nil {
		t.Fatal(err)
	}
	for _, r := range u.Roots {
		if strings.HasPrefix(r.Root, "gcroots/") && (!r.Expired || r.Closure.Paths != 0) {
			t.Errorf("expired marker %+v keeps something", r)
		}
	}
}
