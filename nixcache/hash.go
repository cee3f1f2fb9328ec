package nixcache

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// HashLen is the length of a store path hash in nixbase32 characters; the
// digest it encodes is 20 bytes.
const HashLen = 32

// DefaultStoreDir is the store directory when nix-cache-info does not say.
const DefaultStoreDir = "/nix/store"

// ErrInvalidStorePath: a string is not a store path (or base name) kiss can
// map to a key.
var ErrInvalidStorePath = errors.New("invalid store path")

// Hash is the 20-byte digest of a store path. It is the identity of a narinfo:
// compact (no string header, comparable, usable as a map key) so a million of
// them fit in a few tens of MiB.
type Hash [20]byte

// String is the nixbase32 form, as in file names and store paths.
func (h Hash) String() string { return nixbase32.EncodeToString(h[:]) }

// decodeTable maps a byte to its nixbase32 digit, or 0xff.
var decodeTable = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(nixbase32.Alphabet); i++ {
		t[nixbase32.Alphabet[i]] = byte(i)
	}
	return t
}()

// ParseHash decodes exactly 32 nixbase32 characters. It is on the pruner's
// hot path (every reference of every narinfo), so it decodes with a table
// instead of go-nix's per-character search; FuzzParseBaseName checks it
// against go-nix.
func ParseHash(s string) (Hash, error) {
	h, ok := decodeHash(s)
	if !ok {
		return Hash{}, fmt.Errorf("%w: hash %q is not %d Nix base32 characters", ErrInvalidStorePath, s, HashLen)
	}
	return h, nil
}

// decodeHash works on strings and byte slices alike, so the narinfo parser
// need not allocate a string per reference.
func decodeHash[S ~string | ~[]byte](s S) (Hash, bool) {
	var h Hash
	if len(s) != HashLen {
		return h, false
	}
	// Nix base32 is little-endian: the last character holds the lowest
	// bits. 32 characters of 5 bits are the 20 bytes exactly, so the bits
	// are gathered in a word and a byte is stored as soon as it is whole.
	var acc uint32
	var nbits, out uint
	for n := 0; n < HashLen; n++ {
		d := decodeTable[s[HashLen-1-n]]
		if d == 0xff {
			return Hash{}, false
		}
		acc |= uint32(d) << nbits
		if nbits += 5; nbits >= 8 {
			h[out] = byte(acc)
			acc >>= 8
			nbits -= 8
			out++
		}
	}
	return h, true
}

// validName reports whether s is a valid store path name (the part after
// "<hash>-"), with the character set Nix accepts.
func validName[S ~string | ~[]byte](s S) bool {
	if len(s) == 0 || len(s) > 211 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '=':
		default:
			return false
		}
	}
	return true
}

// baseNameHash parses "<hash>-<name>" without allocating.
func baseNameHash[S ~string | ~[]byte](s S) (Hash, bool) {
	if len(s) < HashLen+2 || s[HashLen] != '-' || !validName(s[HashLen+1:]) {
		return Hash{}, false
	}
	return decodeHash(s[:HashLen])
}

// ParseBaseName parses "<hash>-<name>", the form narinfo `References:` and
// `Deriver:` use, into its hash and name.
func ParseBaseName(s string) (Hash, string, error) {
	h, ok := baseNameHash(s)
	if !ok {
		return Hash{}, "", fmt.Errorf("%w: %q is not <hash>-<name>", ErrInvalidStorePath, s)
	}
	return h, s[HashLen+1:], nil
}

// ParseStorePath parses an absolute store path "<storeDir>/<hash>-<name>".
// A path below a store path ("/nix/store/<hash>-x/bin/y") yields that store
// path's hash, as Nix does for GC roots.
func ParseStorePath(p, storeDir string) (Hash, string, error) {
	if storeDir == "" {
		storeDir = DefaultStoreDir
	}
	rest, ok := strings.CutPrefix(p, strings.TrimSuffix(storeDir, "/")+"/")
	if !ok {
		return Hash{}, "", fmt.Errorf("%w: %q is not in %s", ErrInvalidStorePath, p, storeDir)
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return ParseBaseName(rest)
}

// HashOf maps anything that names a store path to its hash: an absolute store
// path (in storeDir), a base name "<hash>-<name>" (a References entry), or a
// bare 32-character hash. It is the one normalisation every caller uses.
func HashOf(ref, storeDir string) (Hash, error) {
	switch {
	case strings.HasPrefix(ref, "/"):
		h, _, err := ParseStorePath(ref, storeDir)
		return h, err
	case len(ref) == HashLen:
		return ParseHash(ref)
	default:
		h, _, err := ParseBaseName(ref)
		return h, err
	}
}
