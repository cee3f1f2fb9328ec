package gateway

import (
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

func TestClassify(t *testing.T) {
	h := "0123456789abcdfghijklmnpqrsvwxyz"
	const invalid = nixcache.Kind(255)
	for key, want := range map[string]nixcache.Kind{
		"nix-cache-info":                   nixcache.KindCacheInfo,
		h + ".narinfo":                     nixcache.KindNarInfo,
		h + ".ls":                          nixcache.KindListing,
		"nar/" + h + ".nar.zst":            nixcache.KindNAR,
		"log/" + h + "-x.drv":              nixcache.KindLog,
		"realisations/sha256:abc!out.doi":  nixcache.KindRealisation,
		"build-trace-v2/" + h + "-x/o.doi": nixcache.KindBuildTrace,
		"debuginfo/0123abcdef":             nixcache.KindDebugInfo,
		"gcroots/web1":                     nixcache.KindRoot,
		"gcroots/ci/main/42":               nixcache.KindRoot,
		"gcroots/.lock/prune":              nixcache.KindLease,
		".kiss/check/abc/raw":              nixcache.KindProbe,
		"gcroots/.lock/a/b":                invalid,
		"gcroots/.hidden":                  invalid,
		"gcroots/team/.x":                  invalid,
		".kiss/memo":                       invalid,
		"nar/../x.narinfo":                 invalid,
		"eeee.narinfo":                     invalid, // not a store hash
		strings.ToUpper(h) + ".narinfo":    invalid,
		"nar/.x.nar":                       invalid,
		"foo":                              invalid,
		"":                                 invalid,
	} {
		got, err := classify(key)
		if want == invalid {
			if err == nil {
				t.Errorf("classify(%q) = %v, want an error", key, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("classify(%q) = %v, %v, want %v", key, got, err, want)
		}
	}
}

// FuzzClassify: whatever the gateway accepts for writing is a valid storage
// key with no dot segment outside the two kiss directories.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"nar/x.nar", "gcroots/a", "gcroots/.lock/p", "../x", "a//b", ".kiss/check/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		k, err := classify(key)
		if err != nil {
			return
		}
		if k.Rules().Write == nixcache.Nobody {
			t.Fatalf("%q: classified as %v, which nobody may write or read", key, k)
		}
		if err := storage.ValidateKey(key); err != nil {
			t.Fatalf("%q accepted as %v but ValidateKey: %v", key, k, err)
		}
		for i, seg := range strings.Split(key, "/") {
			if strings.HasPrefix(seg, ".") && !(i == 0 && seg == ".kiss") && !(i == 1 && seg == ".lock") {
				t.Fatalf("%q accepted with dot segment %q", key, seg)
			}
		}
	})
}
