package nixcache

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// NarInfoTrust is what checking a narinfo's contents and signatures needs
// beyond NarInfo (kiss verify --deep): the pruner never reads these, so its
// parse does not keep them.
type NarInfoTrust struct {
	FileHash, NarHash string // as written ("sha256:…", SRI, base16)
	Sigs              []string
	// References as written ("<hash>-<name>"), for the fingerprint.
	References []string
}

func (t *NarInfoTrust) add(key, val string) {
	switch key {
	case "FileHash":
		t.FileHash = val
	case "NarHash":
		t.NarHash = val
	case "Sig":
		t.Sigs = append(t.Sigs, val)
	}
}

// ParseNarInfoTrust parses a narinfo as ParseNarInfo does and also returns
// its hashes, signatures and references by name.
func ParseNarInfoTrust(data []byte, storeDir string) (*NarInfo, *NarInfoTrust, error) {
	ni, t := &NarInfo{}, &NarInfoTrust{}
	if _, err := parseNarInfo(ni, data, storeDir, t); err != nil {
		return nil, nil, err
	}
	return ni, t, nil
}

// ParseContentHash parses a FileHash or NarHash in any form Nix writes
// (sha256:<base32>, SRI sha256-<base64>, base16).
func ParseContentHash(s string) (*nixhash.HashWithEncoding, error) {
	h, err := nixhash.ParseAny(s, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: hash %q: %v", ErrInvalidNarInfo, s, err)
	}
	return h, nil
}

// Fingerprint is the text a narinfo's signatures sign, as Nix computes it:
// 1;<store path>;<NarHash as sha256:base32>;<NarSize>;<references as
// absolute paths, comma-separated>.
func Fingerprint(ni *NarInfo, t *NarInfoTrust, storeDir string) (string, error) {
	h, err := ParseContentHash(t.NarHash)
	if err != nil {
		return "", err
	}
	dir := strings.TrimSuffix(storeDirOr(storeDir), "/")
	refs := make([]string, len(t.References))
	for i, r := range t.References {
		refs[i] = dir + "/" + r
	}
	return "1;" + ni.StorePath + ";" + h.Format(nixhash.NixBase32, true) + ";" +
		strconv.FormatUint(ni.NarSize, 10) + ";" + strings.Join(refs, ","), nil
}

// VerifySignature reports whether one of the narinfo's signatures is a
// valid signature of its fingerprint by one of keys ("name:base64", as in
// nix.conf's trusted-public-keys).
func VerifySignature(fingerprint string, sigs []string, keys []signature.PublicKey) bool {
	var parsed []signature.Signature
	for _, s := range sigs {
		if sig, err := signature.ParseSignature(s); err == nil {
			parsed = append(parsed, sig)
		}
	}
	for _, k := range keys {
		for _, s := range parsed {
			if k.Verify(fingerprint, s) {
				return true
			}
		}
	}
	return false
}

// ParsePublicKey parses a trusted public key "name:base64".
func ParsePublicKey(s string) (signature.PublicKey, error) {
	return signature.ParsePublicKey(strings.TrimSpace(s))
}
