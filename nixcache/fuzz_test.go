package nixcache_test

import (
	"bytes"
	"testing"

	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/kiss-cache/kiss/nixcache"
)

func FuzzParseNarInfo(f *testing.F) {
	f.Add([]byte(fixture))
	f.Add([]byte("StorePath: /nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a\nURL: nar/x\nReferences: \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ni, err := nixcache.ParseNarInfo(data, "")
		if err != nil {
			return
		}
		// Whatever parses names a valid store path and a URL; the hash round-trips.
		if _, err := storepath.FromAbsolutePath(ni.StorePath); err != nil {
			t.Fatalf("accepted StorePath %q that go-nix rejects: %v", ni.StorePath, err)
		}
		if ni.URL == "" {
			t.Fatal("accepted a narinfo without URL")
		}
		if h, err := nixcache.ParseHash(ni.Hash.String()); err != nil || h != ni.Hash {
			t.Fatalf("hash round trip: %v", err)
		}
	})
}

// FuzzParseBaseName checks our store path parser against go-nix's.
func FuzzParseBaseName(f *testing.F) {
	f.Add("dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a")
	f.Add("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x")
	f.Add("dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-")
	f.Fuzz(func(t *testing.T, s string) {
		h, name, err := nixcache.ParseBaseName(s)
		sp, gerr := storepath.FromString(s)
		if err == nil {
			if gerr != nil {
				t.Fatalf("%q: we accept, go-nix rejects: %v", s, gerr)
			}
			if !bytes.Equal(sp.Digest, h[:]) || sp.Name != name {
				t.Fatalf("%q: digest/name differ", s)
			}
		}
	})
}

func FuzzParseMarker(f *testing.F) {
	f.Add([]byte("/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a\nshared\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		roots, _, err := nixcache.ParseMarker(data, "")
		if err != nil {
			return
		}
		for _, h := range roots {
			// Every root found is spelled, in the marker, as a store path in /nix/store.
			if !bytes.Contains(data, []byte("/nix/store/"+h.String())) {
				t.Fatalf("root %s not in marker", h)
			}
		}
	})
}
