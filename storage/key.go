package storage

import (
	"fmt"
	"strings"
)

// MaxKeyLen bounds a key; S3's limit is 1024 bytes.
const MaxKeyLen = 1024

// ValidateKey accepts the keys a Nix binary cache and kiss use: slash-separated
// segments of printable ASCII, no empty, "." or ".." segment, no leading or
// trailing slash, no backslash. It is the one guard against path traversal on
// file:// and the gateway.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidKey, MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c < 0x21 || c > 0x7e || c == '\\' {
			return fmt.Errorf("%w: %q has byte 0x%02x at %d", ErrInvalidKey, key, c, i)
		}
	}
	for rest := key; ; {
		seg, more, found := strings.Cut(rest, "/")
		switch seg {
		case "":
			return fmt.Errorf("%w: %q has an empty path segment", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrInvalidKey, key, seg)
		}
		if !found {
			return nil
		}
		rest = more
	}
}

// ValidatePrefix accepts "" or a key prefix (which may end in "/").
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(strings.TrimSuffix(prefix, "/"))
}
