package nixcache

import (
	"fmt"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// VerifyNarInfo reports whether the narinfo in data is signed by one of
// keys: a signature over its Fingerprint (the NAR hash normalised to
// sha256 in Nix base32, as Nix signs it, whatever form the narinfo writes
// it in). An error means it cannot be checked at all (it does not parse,
// or has no NarHash).
func VerifyNarInfo(data []byte, storeDir string, keys []signature.PublicKey) (bool, error) {
	ni, t, err := ParseNarInfoTrust(data, storeDir)
	if err != nil {
		return false, err
	}
	if t.NarHash == "" {
		return false, fmt.Errorf("%w: no NarHash to verify a signature over", ErrInvalidNarInfo)
	}
	fp, err := Fingerprint(ni, t, storeDir)
	if err != nil {
		return false, err
	}
	return VerifySignature(fp, t.Sigs, keys), nil
}
