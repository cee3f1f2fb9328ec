package nixcache_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/nixcache"
)

// TestParseHashAgreesWithGoNix: every hash round-trips, and decodes to
// what go-nix's nixbase32 decodes (the pruner's own decoder is faster, not
// different); a character outside the alphabet anywhere is rejected; the
// keys built from a hash are its string form and suffix.
func TestParseHashAgreesWithGoNix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var want nixcache.Hash
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		s := want.String()
		got, err := nixcache.ParseHash(s)
		if err != nil || got != want {
			t.Fatalf("%s: got %x, %v; want %x", s, got, err, want)
		}
		gonix, err := nixbase32.DecodeString(s)
		if err != nil || !bytes.Equal(gonix, got[:]) {
			t.Fatalf("%s: go-nix decodes %x (%v), we %x", s, gonix, err, got)
		}
		if k := nixcache.NarInfoKey(want); k != s+".narinfo" {
			t.Fatalf("NarInfoKey %q, want %q", k, s+".narinfo")
		}
		if k := nixcache.ListingKey(want); k != s+".ls" {
			t.Fatalf("ListingKey %q, want %q", k, s+".ls")
		}
		bad := []byte(s)
		bad[rng.IntN(len(bad))] = "eotu_-.E"[rng.IntN(8)]
		if _, err := nixcache.ParseHash(string(bad)); err == nil {
			t.Fatalf("%s: accepted", bad)
		}
	}
}
