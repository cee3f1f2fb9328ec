package storage_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// nixKeys returns n keys shaped like a binary cache: narinfos, .ls, NARs,
// logs, markers and a few odd ones at range boundaries.
func nixKeys(n int) []string {
	keys := []string{"nix-cache-info", "gcroots/host-01", "gcroots/.lock/prune", ".kiss/memo/v2", "n", "nar/0z", "nar/1"}
	for i := range n {
		s := sha256.Sum256(fmt.Appendf(nil, "k%d", i))
		h := nixbase32.EncodeToString(s[:20])
		switch i % 5 {
		case 0, 1:
			keys = append(keys, h+".narinfo")
		case 2:
			keys = append(keys, "nar/"+nixbase32.EncodeToString(s[:])+".nar.zst")
		case 3:
			keys = append(keys, h+".ls")
		case 4:
			keys = append(keys, "log/"+h+"-x.drv")
		}
	}
	return keys
}

func putKeys(t testing.TB, st storage.Store, keys []string) {
	t.Helper()
	for _, k := range keys {
		if _, err := st.Put(context.Background(), k, strings.NewReader(k), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func collect(t testing.TB, seq iter.Seq2[[]storage.Object, error]) []string {
	t.Helper()
	var got []string
	for batch, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range batch {
			if !o.HasAttrs() || o.Size != int64(len(o.Key)) {
				t.Fatalf("%s listed without its attributes: %+v", o.Key, o)
			}
			got = append(got, o.Key)
		}
	}
	slices.Sort(got)
	return got
}

func checkParallelList(t *testing.T, st storage.Store, keys, prefixes []string, inFlights ...int) {
	ctx := context.Background()
	for _, prefix := range prefixes {
		var want []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		for _, inFlight := range inFlights {
			got := collect(t, storage.ListParallel(ctx, st, prefix, storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: inFlight}))
			if !slices.Equal(got, want) {
				t.Fatalf("prefix %q, %d in flight: %d keys listed, want %d (every key exactly once)", prefix, inFlight, len(got), len(want))
			}
		}
	}
}

// TestListParallel: the ranges of a parallel listing cover every key exactly
// once, whatever the prefix and the bound on pages in flight, and Counting
// counts one request per page.
func TestListParallel(t *testing.T) {
	st := storage.NewMem(nil)
	keys := nixKeys(6000)
	putKeys(t, st, keys)
	checkParallelList(t, st, keys, []string{"", "nar/", "gcroots/", "log/", "zzz"}, 1, 3, 64)

	c := storage.NewCounting(st)
	got := collect(t, storage.ListParallel(context.Background(), c, "", storage.ParallelListOptions{Splits: nixcache.ListSplits()}))
	if len(got) != len(keys) {
		t.Fatalf("through Counting: %d keys, want %d", len(got), len(keys))
	}
	n := c.Counts()
	if n["list-objects"] < int64(len(keys)) || n["list-pages"] > maxRequests(len(keys)) {
		t.Fatalf("counts %v: want %d objects in at most %d requests", n, len(keys), maxRequests(len(keys)))
	}
}

// maxRequests is ListParallel's bound on page requests for n keys: twice a
// plain listing's, plus one.
func maxRequests(n int) int64 { return 2*int64((n+storage.PageSize-1)/storage.PageSize) + 1 }

// TestListParallelSmallBucket: a bucket that fits in one page costs one
// request, with or without skipped subtrees (the 192 ranges of ListSplits
// are not listed one by one: a small cache pruned hourly would pay ~140k
// LISTs a month), and a bucket of a few pages costs a few.
func TestListParallelSmallBucket(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{0, 10, 900, 2500} {
		st := storage.NewMem(nil)
		keys := nixKeys(n)
		putKeys(t, st, keys)
		for _, skip := range [][]string{nil, nixcache.Subtrees()} {
			c := storage.NewCounting(st)
			got := collect(t, storage.ListParallel(ctx, c, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), SkipPrefixes: skip}))
			want := 0
			for _, k := range keys {
				if skip == nil || !strings.Contains(k, "/") {
					want++
				}
			}
			if len(got) != want {
				t.Fatalf("%d keys (skip %v): %d listed, want %d", len(keys), skip, len(got), want)
			}
			pages := c.Counts()["list-pages"]
			if len(keys) <= storage.PageSize && pages != 1 {
				t.Fatalf("%d keys (skip %v): %d list requests, want 1", len(keys), skip, pages)
			}
			if pages > maxRequests(len(keys)) {
				t.Fatalf("%d keys (skip %v): %d list requests, want at most %d", len(keys), skip, pages, maxRequests(len(keys)))
			}
		}
	}
}

// gauge is a paged bucket in memory (keys sorted once, unlike Mem) that
// records the most ListPage requests outstanding at once; each takes a
// millisecond, so requests that may overlap do.
type gauge struct {
	storage.Store // a PageLister underneath, for ListParallel's check
	objs          []storage.Object
	mu            sync.Mutex
	cur, max      int
}

func newGauge(keys []string) *gauge {
	g := &gauge{Store: storage.NewMem(nil)}
	now := time.Now()
	for _, k := range keys {
		g.objs = append(g.objs, storage.Object{Key: k, Size: int64(len(k)), ModTime: now})
	}
	slices.SortFunc(g.objs, func(a, b storage.Object) int { return strings.Compare(a.Key, b.Key) })
	return g
}

func (g *gauge) Unwrap() storage.Store { return g.Store }

func (g *gauge) ListPage(_ context.Context, prefix, after string, limit int) ([]storage.Object, bool, error) {
	g.mu.Lock()
	g.cur++
	g.max = max(g.max, g.cur)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.cur--
		g.mu.Unlock()
	}()
	time.Sleep(time.Millisecond)
	i, _ := slices.BinarySearchFunc(g.objs, max(after+"\x00", prefix), func(o storage.Object, k string) int { return strings.Compare(o.Key, k) })
	var page []storage.Object
	for ; i < len(g.objs) && strings.HasPrefix(g.objs[i].Key, prefix); i++ {
		if len(page) == limit {
			return page, true, nil
		}
		page = append(page, g.objs[i])
	}
	return page, false, nil
}

// TestListParallelLargeBucket: a bucket of many pages is listed with
// exactly the bound of pages in flight at the peak, never more, in at most
// twice the requests of a plain listing.
func TestListParallelLargeBucket(t *testing.T) {
	keys := nixKeys(100000)
	for _, inFlight := range []int{1, 4, 16} {
		g := newGauge(keys)
		c := storage.NewCounting(g)
		got := collect(t, storage.ListParallel(context.Background(), c, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: inFlight}))
		if len(got) != len(keys) {
			t.Fatalf("%d in flight: %d keys listed, want %d", inFlight, len(got), len(keys))
		}
		if g.max != inFlight {
			t.Fatalf("%d in flight allowed: %d at the peak", inFlight, g.max)
		}
		pages := c.Counts()["list-pages"]
		if pages > maxRequests(len(keys)) {
			t.Fatalf("%d in flight: %d list requests, want at most %d", inFlight, pages, maxRequests(len(keys)))
		}
		t.Logf("%d keys, %d in flight: %d list requests", len(keys), inFlight, pages)
	}
}

// noPages hides the driver's ListPage behind a wrapper that does not forward
// it: ListParallel must fall back to one listing.
type noPages struct{ storage.Store }

func TestListParallelFallback(t *testing.T) {
	st := storage.NewMem(nil)
	keys := nixKeys(2500)
	putKeys(t, st, keys)
	got := collect(t, storage.ListParallel(context.Background(), noPages{st}, "", storage.ParallelListOptions{Splits: nixcache.ListSplits()}))
	if len(got) != len(keys) {
		t.Fatalf("%d keys, want %d", len(got), len(keys))
	}
}

// TestListParallelS3: the same on versitygw, through ListObjectsV2 with
// StartAfter.
func TestListParallelS3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	st, _ := testenv.VersitygwStore(t)
	keys := nixKeys(1500)
	putKeys(t, st, keys)
	checkParallelList(t, st, keys, []string{"", "nar/"}, 4)
}

// TestListParallelSkip: skipped subtrees are left out, everything else is
// listed once, and a skipped subtree costs no page of its own.
func TestListParallelSkip(t *testing.T) {
	st := storage.NewMem(nil)
	keys := nixKeys(6000)
	putKeys(t, st, keys)
	skip := []string{"nar/", "log/"}
	var want []string
	for _, k := range keys {
		if !strings.HasPrefix(k, "nar/") && !strings.HasPrefix(k, "log/") {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	c := storage.NewCounting(st)
	got := collect(t, storage.ListParallel(context.Background(), c, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: 4, SkipPrefixes: skip}))
	if !slices.Equal(got, want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	full := storage.NewCounting(st)
	collect(t, storage.ListParallel(context.Background(), full, "", storage.ParallelListOptions{Splits: nixcache.ListSplits(), PagesInFlight: 4}))
	if c.Counts()["list-objects"] >= full.Counts()["list-objects"] {
		t.Fatalf("skipping read %d objects, the full listing %d", c.Counts()["list-objects"], full.Counts()["list-objects"])
	}
}
