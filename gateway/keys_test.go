package gateway

import (
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/storage"
)

func TestClassify(t *testing.T) {
	h := "0123456789abcdfghijklmnpqrsvwxyz"
	for key, want := range map[string]kind{
		"nix-cache-info":                   kindCacheInfo,
		h + ".narinfo":                     kindNarinfo,
		h + ".ls":                          kindListing,
		"nar/" + h + ".nar.zst":            kindNar,
		"log/" + h + "-x.drv":              kindLog,
		"realisations/sha256:abc!out.doi":  kindRealisation,
		"build-trace-v2/" + h + "-x/o.doi": kindBuildTrace,
		"debuginfo/0123abcdef":             kindDebuginfo,
		"gcroots/web1":                     kindMarker,
		"gcroots/ci/main/42":               kindMarker,
		"gcroots/.lock/prune":              kindLease,
		".kiss/check/abc/raw":              kindProbe,
		"gcroots/.lock/a/b":                kindInvalid,
		"gcroots/.hidden":                  kindInvalid,
		".kiss/memo":                       kindInvalid,
		"nar/../x.narinfo":                 kindInvalid,
		"eeee.narinfo":                     kindInvalid, // not a store hash
		strings.ToUpper(h) + ".narinfo":    kindInvalid,
		"nar/.x.nar":                       kindInvalid,
		"foo":                              kindInvalid,
		"":                                 kindInvalid,
	} {
		if got, _ := classify(key); got != want {
			t.Errorf("classify(%q) = %d, want %d", key, got, want)
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
		if k == kindInvalid {
			if err == nil {
				t.Fatalf("%q: invalid without an error", key)
			}
			return
		}
		if err := storage.ValidateKey(key); err != nil {
			t.Fatalf("%q accepted as %d but ValidateKey: %v", key, k, err)
		}
		for i, seg := range strings.Split(key, "/") {
			if strings.HasPrefix(seg, ".") && !(i == 0 && seg == ".kiss") && !(i == 1 && seg == ".lock") {
				t.Fatalf("%q accepted with dot segment %q", key, seg)
			}
		}
	})
}
