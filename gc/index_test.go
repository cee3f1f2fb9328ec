package gc

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/kiss-cache/kiss/nixcache"
)

func testHash(i int) nixcache.Hash {
	var h nixcache.Hash
	s := sha256.Sum256(fmt.Appendf(nil, "path %d", i))
	copy(h[:], s[:])
	return h
}

// TestSortByHash: the linear-time sort agrees with a comparison sort,
// including hashes that share their first two bytes (one bucket).
func TestSortByHash(t *testing.T) {
	var in chunked[niEntry]
	var want []nixcache.Hash
	for i := range 3*chunkLen + 17 {
		h := testHash(i)
		if i%5 == 0 { // crowd one bucket
			h[0], h[1] = 0xab, 0xcd
		}
		in.add(niEntry{h: h, size: int32(i)})
		want = append(want, h)
	}
	got := sortByHash(&in)
	slices.SortFunc(want, func(a, b nixcache.Hash) int { return bytes.Compare(a[:], b[:]) })
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].h != want[i] {
			t.Fatalf("entry %d: %s, want %s", i, got[i].h, want[i])
		}
	}
}

// TestIndexFind: every listed hash is found at its index, absent ones are not.
func TestIndexFind(t *testing.T) {
	var in chunked[niEntry]
	for i := range 1000 {
		in.add(niEntry{h: testHash(i)})
	}
	ix := &index{narinfos: sortByHash(&in)}
	ix.buildSlots()
	for i, e := range ix.narinfos {
		if got := ix.find(e.h); got != i {
			t.Fatalf("find(%s) = %d, want %d", e.h, got, i)
		}
	}
	for i := 1000; i < 2000; i++ {
		if got := ix.find(testHash(i)); got != -1 {
			t.Fatalf("find(absent %d) = %d", i, got)
		}
	}
	if (&index{}).find(testHash(1)) != -1 {
		t.Fatal("find on an empty index")
	}
}

// TestRefBlocks: (blocks[uint32]) lists never straddle blocks, including one longer than a
// block, and read back as written.
func TestRefBlocks(t *testing.T) {
	var r blocks[uint32]
	type list struct{ off, n uint32 }
	var lists []list
	sizes := []int{0, 3, 1<<blockShift - 2, 5, 1<<blockShift + 7, 1}
	for k, n := range sizes {
		off := r.reserve(n)
		for j := range n {
			r.push(uint32(k<<24 | j))
		}
		lists = append(lists, list{off, uint32(n)})
	}
	for k, l := range lists {
		got := r.list(l.off, l.n)
		if len(got) != sizes[k] {
			t.Fatalf("list %d: %d refs, want %d", k, len(got), sizes[k])
		}
		for j, v := range got {
			if v != uint32(k<<24|j) {
				t.Fatalf("list %d, ref %d = %#x", k, j, v)
			}
		}
	}
}

// TestArenaKeys: keys read back from the arena across block boundaries.
func TestArenaKeys(t *testing.T) {
	ix := &index{}
	var offs []uint32
	var keys []string
	for i := range 40000 { // ~1.2 MiB: more than one block
		k := fmt.Sprintf("nar/%032d.nar.xz", i)
		off, err := ix.addKey(k)
		if err != nil {
			t.Fatal(err)
		}
		offs, keys = append(offs, off), append(keys, k)
	}
	if len(ix.arena.b) < 2 {
		t.Fatalf("%d arena blocks, want several", len(ix.arena.b))
	}
	for i, k := range keys {
		o := objEntry{off: offs[i], n: uint16(len(k))}
		if got := ix.key(&o); got != k {
			t.Fatalf("key %d = %q, want %q", i, got, k)
		}
	}
}
