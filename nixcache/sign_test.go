package nixcache_test

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/nixcache"
)

// TestFingerprintMatchesGoNix: for /nix/store, the fingerprint is go-nix's
// (which hard-codes that store directory); for another store directory the
// references carry that directory.
func TestFingerprintMatchesGoNix(t *testing.T) {
	fp := fingerprint(t, fixture, "")
	ref, err := narinfo.Parse(strings.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	if want := ref.Fingerprint(); fp != want {
		t.Fatalf("fingerprint\n ours  %s\n go-nix %s", fp, want)
	}
	gnu := strings.ReplaceAll(fixture, "/nix/store/", "/gnu/store/")
	fp = fingerprint(t, gnu, "/gnu/store")
	if !strings.HasSuffix(fp, ";/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a,/gnu/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b") {
		t.Fatalf("references not in the store dir: %s", fp)
	}
}

func fingerprint(t *testing.T, data, storeDir string) string {
	t.Helper()
	ni, trust, err := nixcache.ParseNarInfoTrust([]byte(data), storeDir)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := nixcache.Fingerprint(ni, trust, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// TestVerifyNarInfo: a signature over the fingerprint verifies, with the
// NAR hash written in base32 (as Nix writes it) or base16 (Nix signs the
// base32 form either way; the gateway's own copy of this rule used the hash
// as written and refused such a narinfo); a wrong key, an altered field or
// a malformed narinfo does not.
func TestVerifyNarInfo(t *testing.T) {
	sk, pk, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := signature.GenerateKeypair("other-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sk.Sign(rand.Reader, fingerprint(t, fixture, ""))
	if err != nil {
		t.Fatal(err)
	}
	signed := fixture + "Sig: " + sig.String() + "\n"
	b32 := "0gxb81r7gprh2asvkw2ah5g9vmk4jhyz93lfx89wyr2srqay8m3b"
	digest, err := nixbase32.DecodeString(b32)
	if err != nil {
		t.Fatal(err)
	}
	base16 := strings.Replace(signed, "NarHash: sha256:"+b32, "NarHash: sha256:"+hex.EncodeToString(digest), 1)
	for name, tc := range map[string]struct {
		data string
		keys []signature.PublicKey
		want bool
	}{
		"signed":          {signed, []signature.PublicKey{pk}, true},
		"any trusted key": {signed, []signature.PublicKey{other, pk}, true},
		"base16 NarHash":  {base16, []signature.PublicKey{pk}, true},
		"other key":       {signed, []signature.PublicKey{other}, false},
		"unsigned":        {fixture, []signature.PublicKey{pk}, false},
		"altered size":    {strings.Replace(signed, "NarSize: 576", "NarSize: 577", 1), []signature.PublicKey{pk}, false},
		"malformed Sig":   {fixture + "Sig: nonsense\n", []signature.PublicKey{pk}, false},
		"md5 NarHash":     {strings.Replace(signed, "sha256:"+b32, "md5:00000000000000000000000000000000", 1), []signature.PublicKey{pk}, false},
	} {
		ok, err := nixcache.VerifyNarInfo([]byte(tc.data), "", tc.keys)
		if err != nil || ok != tc.want {
			t.Errorf("%s: %v, %v; want %v", name, ok, err, tc.want)
		}
	}
	for name, data := range map[string]string{
		"no NarHash": strings.Replace(signed, "NarHash:", "X-NarHash:", 1),
	} {
		if _, err := nixcache.VerifyNarInfo([]byte(data), "", []signature.PublicKey{pk}); err == nil {
			t.Errorf("%s: verified without an error", name)
		}
	}
}
