package storage_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"iter"
	"slices"
	"strings"
	"testing"

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
	if n["list-objects"] < int64(len(keys)) || n["list-pages"] < int64(len(nixcache.ListSplits())) {
		t.Fatalf("counts %v: want %d objects and a request per range at least", n, len(keys))
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
