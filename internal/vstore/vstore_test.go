package vstore

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

func newTest(t testing.TB, paths int64) *Store {
	t.Helper()
	s, err := New(Config{Paths: paths, Seed: 7, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPermutation: the Feistel permutation is a bijection with its inverse,
// for sizes that are and are not powers of two.
func TestPermutation(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 17, 1000, 4096, 5000} {
		f := newFeistel(n, 42)
		seen := make([]bool, n)
		for x := range n {
			y := f.fwd(x)
			if y >= n || seen[y] {
				t.Fatalf("n=%d: fwd(%d)=%d repeats or is out of range", n, x, y)
			}
			seen[y] = true
			if f.inv(y) != x {
				t.Fatalf("n=%d: inv(fwd(%d)) = %d", n, x, f.inv(y))
			}
		}
	}
}

// TestKeysRoundTrip: every key maps back to its object, and the rendered
// sizes are the real ones.
func TestKeysRoundTrip(t *testing.T) {
	s := newTest(t, 5000)
	g := s.g
	for sl := range g.niSlots {
		var h [32]byte
		g.niHash(h[:], sl)
		if got, ok := g.niSlotOf(string(h[:])); !ok || got != sl {
			t.Fatalf("slot %d: hash %s parses to %d %v", sl, h, got, ok)
		}
		if !g.niExists(sl) {
			continue
		}
		body, _, _ := g.narinfo(nil, sl, nil, nil)
		if n, _, _ := g.narinfoLen(sl, nil, nil); n != len(body) {
			t.Fatalf("slot %d: narinfoLen %d, rendered %d:\n%s", sl, n, len(body), body)
		}
		if g.lsLen(sl) != len(g.ls(nil, sl)) {
			t.Fatalf("slot %d: lsLen", sl)
		}
	}
	for o := range g.outputs {
		if g.nameLen(o) != len(g.appendName(nil, o)) {
			t.Fatalf("output %d: nameLen %d, name %q", o, g.nameLen(o), g.appendName(nil, o))
		}
		if g.logLen(o) != len(g.logBody(nil, o)) {
			t.Fatalf("output %d: logLen", o)
		}
	}
	for n := range g.narSlots {
		var h [52]byte
		g.narHash(h[:], n)
		if h[0] != '0' && h[0] != '1' {
			t.Fatalf("NAR %d: file hash %s does not start with 0 or 1", n, h)
		}
		if got, ok := g.narSlotOf(string(h[:])); !ok || got != n {
			t.Fatalf("NAR %d: parses to %d %v", n, got, ok)
		}
	}
}

// TestListing: the listing is in strict byte order, every key in it is one
// the store answers for with the same attributes, narinfos parse and name
// the NARs that are listed, and the count is the generator's.
func TestListing(t *testing.T) {
	ctx := context.Background()
	s := newTest(t, 4000)
	var keys []string
	byKey := map[string]storage.Object{}
	for o, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 && o.Key <= keys[len(keys)-1] {
			t.Fatalf("%q listed after %q", o.Key, keys[len(keys)-1])
		}
		keys = append(keys, o.Key)
		byKey[o.Key] = o
	}
	a := s.Answer()
	if int64(len(keys)) != a.Objects {
		t.Fatalf("%d keys listed, the answer counts %d objects", len(keys), a.Objects)
	}
	kinds := map[nixcache.Kind]int{}
	for _, k := range keys {
		kind, _ := nixcache.Classify(k)
		kinds[kind]++
		st, err := s.Stat(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if st != byKey[k] {
			t.Fatalf("%s: stat %+v, listed %+v", k, st, byKey[k])
		}
		if kind == nixcache.KindNAR {
			continue
		}
		r, err := s.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r)
		r.Close()
		if int64(len(body)) != st.Size {
			t.Fatalf("%s: %d bytes, size %d", k, len(body), st.Size)
		}
		if kind == nixcache.KindNarInfo {
			ni, err := nixcache.ParseNarInfo(body, "/nix/store")
			if err != nil {
				t.Fatalf("%s: %v\n%s", k, err, body)
			}
			nk, _ := ni.NarKey()
			if _, ok := byKey[nk]; !ok {
				t.Fatalf("%s names NAR %s, which is not listed", k, nk)
			}
		}
	}
	if kinds[nixcache.KindNarInfo] != int(a.NarInfos) || kinds[nixcache.KindRoot] != 8 || kinds[nixcache.KindLog] == 0 || kinds[nixcache.KindListing] == 0 {
		t.Fatalf("kinds %v, answer %+v", kinds, a)
	}
	if abs(a.NarInfos-4000) > 100 {
		t.Fatalf("%d narinfos for 4000 paths", a.NarInfos)
	}

	// Pages from any start agree with the full listing.
	for _, i := range []int{0, 1, 17, len(keys) / 2, len(keys) - 2} {
		page, more, err := s.ListPage(ctx, "", keys[i], 100)
		if err != nil {
			t.Fatal(err)
		}
		want := keys[i+1 : min(len(keys), i+101)]
		var got []string
		for _, o := range page {
			got = append(got, o.Key)
		}
		if !slices.Equal(got, want) || more != (i+101 < len(keys)) {
			t.Fatalf("page after %d: %d keys (more %v), want %d", i, len(got), more, len(want))
		}
	}
	// Prefixes.
	for _, p := range []string{"nar/", "log/", "gcroots/", "nix", keys[len(keys)/3][:3]} {
		var want, got []string
		for _, k := range keys {
			if strings.HasPrefix(k, p) {
				want = append(want, k)
			}
		}
		for o, err := range s.List(ctx, p) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, o.Key)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("prefix %q: %d keys, want %d", p, len(got), len(want))
		}
	}
	// Parallel listing covers the same keys.
	var par []string
	for batch, err := range storage.ListParallel(ctx, s, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: 4}) {
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range batch {
			par = append(par, o.Key)
		}
	}
	slices.Sort(par)
	if !slices.Equal(par, keys) {
		t.Fatalf("parallel listing: %d keys, want %d", len(par), len(keys))
	}
}

func abs(v int64) int64 { return max(v, -v) }

// TestReachability: the references the narinfos name make exactly the
// Answer's reachable set reachable from the markers and the newborns.
func TestReachability(t *testing.T) {
	ctx := context.Background()
	s := newTest(t, 6000)
	seen := map[nixcache.Hash]bool{}
	var queue []nixcache.Hash
	push := func(h nixcache.Hash) {
		if !seen[h] {
			seen[h] = true
			queue = append(queue, h)
		}
	}
	for o, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		kind, h := nixcache.Classify(o.Key)
		switch {
		case kind == nixcache.KindRoot:
			r, _ := s.Get(ctx, o.Key)
			body, _ := io.ReadAll(r)
			roots, _, err := nixcache.ParseMarker(body, "/nix/store")
			if err != nil || len(roots) != 1 {
				t.Fatalf("marker %s: %q %v", o.Key, body, err)
			}
			push(roots[0])
		case kind == nixcache.KindNarInfo && o.ModTime.After(s.cfg.Now.Add(-time.Hour)):
			push(h)
		}
	}
	reachable := 0
	for len(queue) > 0 {
		h := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		r, err := s.Get(ctx, nixcache.NarInfoKey(h))
		if err != nil {
			continue // an absent deriver
		}
		body, _ := io.ReadAll(r)
		ni, err := nixcache.ParseNarInfo(body, "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		reachable++
		for _, ref := range ni.References {
			if _, err := s.Stat(ctx, nixcache.NarInfoKey(ref)); err != nil {
				t.Fatalf("%s references %s, which is absent", h, ref)
			}
			push(ref)
		}
		if ni.HasDeriver {
			push(ni.Deriver)
		}
	}
	a := s.Answer()
	if int64(reachable) != a.Reachable {
		t.Fatalf("%d reachable by walking, the answer says %d", reachable, a.Reachable)
	}
	if a.Newborn == 0 || a.Delete["narinfo"] == 0 || a.Delete["nar"] == 0 {
		t.Fatalf("answer %+v lacks newborns or garbage", a)
	}
}

// TestDeleteAndCheck: deleting exactly the Answer's garbage passes Check;
// deleting a live object or a newborn does not; requests are counted.
func TestDeleteAndCheck(t *testing.T) {
	ctx := context.Background()
	s := newTest(t, 3000)
	if r := s.Check(); r.OK() {
		t.Fatalf("nothing deleted yet, but %s", r)
	}
	var garbage, live, newborn []string
	for o, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		r, _ := s.parse(o.Key)
		var out uint64
		switch r.k {
		case kNarinfo, kLs:
			out = r.i >> 1
		case kNAR:
			if r.i >= s.g.niSlots {
				garbage = append(garbage, o.Key)
				continue
			}
			out = r.i >> 1
		case kLog:
			out = r.i
		default:
			continue
		}
		switch {
		case s.g.isNewborn(out):
			newborn = append(newborn, o.Key)
		case s.g.kept(out):
			live = append(live, o.Key)
		default:
			garbage = append(garbage, o.Key)
		}
	}
	if err := s.DeleteMany(ctx, garbage); err != nil {
		t.Fatal(err)
	}
	if r := s.Check(); !r.OK() || r.Deleted != int64(len(garbage)) {
		t.Fatalf("after deleting the garbage: %s", r)
	}
	if n := s.Requests()["DeleteObjects"]; n != int64((len(garbage)+999)/1000) {
		t.Fatalf("%d DeleteObjects for %d keys", n, len(garbage))
	}
	for o, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(garbage, o.Key) {
			t.Fatalf("deleted %s still listed", o.Key)
		}
	}
	s.Delete(ctx, newborn[0], storage.DeleteOptions{})
	s.Delete(ctx, live[0], storage.DeleteOptions{})
	r := s.Check()
	if len(r.NewbornDeleted) != 1 || len(r.LiveDeleted) != 1 {
		t.Fatalf("after deleting a newborn and a live object: %s", r)
	}
	if _, err := s.Get(ctx, live[0]); err == nil {
		t.Fatalf("deleted %s still readable", live[0])
	}
	// A key written again comes back, from the overlay.
	if _, err := s.Put(ctx, live[0], strings.NewReader("again"), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, live[0], strings.NewReader("again"), storage.PutOptions{IfNotExist: true}); err == nil {
		t.Fatal("a second create-if-absent succeeded")
	}
	if o, err := s.Stat(ctx, live[0]); err != nil || o.Size != 5 {
		t.Fatalf("rewritten key: %+v %v", o, err)
	}
}

// TestStateDir: the overlay and the deletions survive in StateDir.
func TestStateDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{Paths: 2000, Seed: 3, StateDir: dir, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var first string
	for o := range s.List(ctx, "nar/") {
		first = o.Key
		break
	}
	s.Delete(ctx, first, storage.DeleteOptions{})
	s.Put(ctx, ".kiss/memo/v2", strings.NewReader(strings.Repeat("m", 5000)), storage.PutOptions{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Stat(ctx, first); err == nil {
		t.Fatal("deletion lost")
	}
	r, err := s2.Get(ctx, ".kiss/memo/v2")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(storage.FileReader); !ok {
		t.Fatal("an overlay object in StateDir is not a FileReader")
	}
	if b, _ := io.ReadAll(r); len(b) != 5000 {
		t.Fatalf("overlay body %d bytes", len(b))
	}
}
