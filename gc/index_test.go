package gc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

func testHash(i int) nixcache.Hash {
	var h nixcache.Hash
	s := sha256.Sum256(fmt.Appendf(nil, "path %d", i))
	copy(h[:], s[:])
	return h
}

func listed(t *testing.T, hashes []nixcache.Hash, extra ...string) *index {
	t.Helper()
	st := storage.NewMem(nil)
	for _, h := range hashes {
		st.Put(context.Background(), nixcache.NarInfoKey(h), strings.NewReader("x"), storage.PutOptions{})
	}
	for _, k := range extra {
		st.Put(context.Background(), k, strings.NewReader("y"), storage.PutOptions{})
	}
	tmp := newTempFiles(t.TempDir())
	t.Cleanup(tmp.closeAll)
	ix, err := list(context.Background(), listConfig{st: st, tmp: tmp, prog: NoProgress{}, cutoff: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// TestIndex: ids are in hash order, every listed hash is found at its id and
// its record holds it, absent ones are not found; hashes crowding one
// directory entry (the same first bytes) are told apart by the next ones.
func TestIndex(t *testing.T) {
	t.Run("in memory", testIndex)
	t.Run("distributed", func(t *testing.T) {
		defer func(c int64) { sortChunk = c }(sortChunk)
		sortChunk = 10 * niRecSize // 256 buckets of ~20 records
		testIndex(t)
	})
}

func testIndex(t *testing.T) {
	var hashes []nixcache.Hash
	for i := range 5000 {
		h := testHash(i)
		if i%7 == 0 { // crowd one bucket and one directory entry
			h[0], h[1], h[2] = 0xab, 0xcd, 0xef
		}
		if i%11 == 0 { // the same first 8 bytes: the sort's integer key ties
			copy(h[:8], "\x12\x34\x56\x78\x9a\xbc\xde\xf0")
		}
		hashes = append(hashes, h)
	}
	ix := listed(t, hashes, "nar/x.nar.xz", "log/4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv", "nix-cache-info")
	if ix.n != len(hashes) || ix.nObjs != 2 {
		t.Fatalf("%d narinfos and %d objects, want %d and 2", ix.n, ix.nObjs, len(hashes))
	}
	want := slices.Clone(hashes)
	slices.SortFunc(want, func(a, b nixcache.Hash) int { return bytes.Compare(a[:], b[:]) })
	err := ix.forNarInfos(false, func(start int, recs []niRec) error {
		for k := range recs {
			id := start + k
			if recs[k].h != want[id] {
				t.Fatalf("id %d holds %s, want %s", id, recs[k].h, want[id])
			}
			if got := ix.lookup(&want[id]); got != id {
				t.Fatalf("lookup(%s) = %d, want %d", want[id], got, id)
			}
			if h, err := ix.hashOf(id); err != nil || h != want[id] {
				t.Fatalf("hashOf(%d) = %s, %v", id, h, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 5000; i < 6000; i++ {
		h := testHash(i)
		if got := ix.lookup(&h); got != -1 {
			t.Fatalf("lookup(absent %d) = %d", i, got)
		}
	}
	if empty := listed(t, nil); empty.lookup(&want[0]) != -1 {
		t.Fatal("lookup on an empty index")
	}
}

// TestIndexRefuses96BitTwins: two listed narinfos that agree on the 96 bits
// the index keeps are refused (fail closed), not conflated.
func TestIndexRefuses96BitTwins(t *testing.T) {
	a, b := testHash(1), testHash(1)
	b[19] ^= 1
	st := storage.NewMem(nil)
	for _, h := range []nixcache.Hash{a, b, testHash(2)} {
		st.Put(context.Background(), nixcache.NarInfoKey(h), strings.NewReader("x"), storage.PutOptions{})
	}
	tmp := newTempFiles(t.TempDir())
	defer tmp.closeAll()
	_, err := list(context.Background(), listConfig{st: st, tmp: tmp, prog: NoProgress{}})
	if err == nil || !strings.Contains(err.Error(), "96 bits") {
		t.Fatalf("twins listed: %v", err)
	}
}

// TestRecordsRoundTrip: walk records and memo records read back as written,
// and decodeRecord rejects every truncation.
func TestRecordsRoundTrip(t *testing.T) {
	a := adjRecord{id: 77, fp: 1, nar: 2, fileSize: 300000, hasDer: true, der: adjRef{absent: true, h: testHash(9)},
		refs: []adjRef{{id: 5}, {absent: true, h: testHash(3)}, {id: 77}}}
	enc := a.appendTo(nil)
	var b adjRecord
	if err := b.decode(enc); err != nil {
		t.Fatal(err)
	}
	if b.id != a.id || b.fp != a.fp || b.nar != a.nar || b.fileSize != a.fileSize || !b.hasDer || b.der.h != a.der.h || len(b.refs) != 3 || b.refs[1].h != a.refs[1].h || b.refs[2].id != 77 {
		t.Fatalf("walk record: %+v, want %+v", b, a)
	}
	rec := appendRecord(nil, a.fp, a.nar, a.fileSize, a.refs, adjRef{id: 5}, true, func(id uint32) uint64 { return uint64(id) * 2 })
	if len(rec)%4 != 0 {
		t.Fatalf("record of %d bytes is not padded", len(rec))
	}
	var e memoEntry
	n, err := decodeRecord(rec, 1000, &e)
	if err != nil || n != len(rec) {
		t.Fatalf("decode: %d %v", n, err)
	}
	if e.fp != 1 || e.nar != 2 || e.fileSize != 300000 || len(e.refs) != 3 || e.refs[0].entry != 10 || e.refs[1].entry != -1 || e.refs[1].h != testHash(3) || e.refs[2].entry != 154 || e.der.entry != 10 {
		t.Fatalf("memo record: %+v", e)
	}
	if _, err := decodeRecord(rec, 100, &e); err == nil {
		t.Fatal("a reference past the entry count decoded")
	}
	for i := range len(rec) - 1 {
		if _, err := decodeRecord(rec[:i], 1000, &e); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", i)
		}
	}
}

// TestFates: the keep/delete rules, as a table.
func TestFates(t *testing.T) {
	const cutoff = 1000
	old, newer := int64(10), int64(2000)
	for _, c := range []struct {
		kind         nixcache.Kind
		mtime        int64
		unreferenced bool
		want         fate
	}{
		{nixcache.KindNAR, old, true, deleteIt},
		{nixcache.KindNAR, old, false, keepIt},
		{nixcache.KindNAR, newer, true, keepIt},  // young: grace
		{nixcache.KindNAR, noTime, true, keepIt}, // age unknown
		{nixcache.KindNAR, goneTime, true, keepIt},
		{nixcache.KindListing, old, true, deleteIt},
		{nixcache.KindLog, old, false, keepIt},
		{nixcache.KindTemp, old, true, deleteIt},
		{nixcache.KindTemp, newer, true, keepIt},
		{nixcache.KindRealisation, old, false, readContent},
		{nixcache.KindDebugInfo, old, false, readContent},
		{nixcache.KindBuildTrace, newer, false, keepIt},
		{nixcache.KindDebugInfo, noTime, false, keepIt},
	} {
		if got := objectFate(c.kind, c.mtime, cutoff, c.unreferenced); got != c.want {
			t.Errorf("%s mtime %d unreferenced %v: %d, want %d", c.kind, c.mtime, c.unreferenced, got, c.want)
		}
	}
	for _, c := range []struct {
		reached bool
		mtime   int64
		want    fate
	}{
		{true, old, keepIt}, {false, old, deleteIt}, {false, newer, keepIt}, {false, noTime, keepIt}, {false, goneTime, keepIt},
	} {
		if got := narinfoFate(c.reached, c.mtime, cutoff); got != c.want {
			t.Errorf("narinfo reached %v mtime %d: %d, want %d", c.reached, c.mtime, got, c.want)
		}
	}
}

// TestForObjectChunks: the chunks hold every listed object once, in listing
// order; an error from fn stops the read-ahead and is returned; a cancelled
// context ends it with the context's error.
func TestForObjectChunks(t *testing.T) {
	var extra []string
	for i := range 1000 {
		extra = append(extra, fmt.Sprintf("nar/%s.nar.xz", testHash(i)))
	}
	ix := listed(t, []nixcache.Hash{testHash(0)}, extra...)
	var want []string
	if err := ix.forObjects(func(o *objRec) error { want = append(want, o.key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(extra) {
		t.Fatalf("%d objects listed, want %d", len(want), len(extra))
	}
	ctx := context.Background()
	var got []string
	err := ix.forObjectChunks(ctx, 64, func(chunk []objRec) error {
		if len(chunk) == 0 || len(chunk) > 64 {
			t.Errorf("chunk of %d", len(chunk))
		}
		for i := range chunk {
			got = append(got, chunk[i].key)
		}
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("chunks named %d objects (err %v), want the %d listed in order", len(got), err, len(want))
	}

	stop := fmt.Errorf("stop here")
	calls := 0
	err = ix.forObjectChunks(ctx, 64, func([]objRec) error {
		if calls++; calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 3 {
		t.Fatalf("fn's error: got %v after %d calls, want %v after 3", err, calls, stop)
	}

	cctx, cancel := context.WithCancel(ctx)
	calls = 0
	err = ix.forObjectChunks(cctx, 64, func([]objRec) error {
		if calls++; calls == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls >= len(want)/64 {
		t.Fatalf("cancelled: got %v after %d calls, want context.Canceled early", err, calls)
	}
}
