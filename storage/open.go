package storage

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// OpenOption adjusts Open.
type OpenOption func(*openConfig)

type openConfig struct {
	createDir bool
}

// CreateDir makes Open create a file:// store's directory if it is
// missing. Only writers that may start a cache ask for it (kiss serve,
// kiss with-lock); without it a missing directory is ErrNoStore, so a
// command that only reads never creates one (a typo stays a typo).
func CreateDir() OpenOption { return func(c *openConfig) { c.createDir = true } }

// Open returns the Store for a URL:
//
//	file:///var/lib/nix-cache   a flat directory (as nginx serves it)
//	/var/lib/nix-cache          the same (a plain path means file://)
//	s3://bucket?region=…&endpoint=…
//	mem://name                  in-process, for tests (same name, same store)
//
// A file:// directory that does not exist is ErrNoStore (see CreateDir).
func Open(ctx context.Context, rawURL string, opts ...OpenOption) (Store, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidURL)
	}
	if !strings.Contains(rawURL, "://") {
		if scheme, _, ok := strings.Cut(rawURL, ":"); ok && knownScheme(scheme) {
			// "file:relative" is not a directory named "file:relative".
			return nil, fmt.Errorf("%w: %q: want %s://… (file:///absolute/dir, or a plain path for a directory)", ErrInvalidURL, rawURL, scheme)
		}
		abs, err := filepath.Abs(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrInvalidURL, rawURL, err)
		}
		return OpenFile(abs, opts...)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidURL, rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w: %q: file:// URLs take no host (use file:///abs/path)", ErrInvalidURL, rawURL)
		}
		if u.Path == "" {
			return nil, fmt.Errorf("%w: %q: no directory", ErrInvalidURL, rawURL)
		}
		return OpenFile(u.Path, opts...)
	case "s3":
		return openS3(ctx, u)
	case "mem":
		return OpenMem(u.Host + u.Path), nil
	case "http", "https":
		// A kiss gateway: package httpstore, which this package cannot
		// import (storage imports nothing of kiss); cmd/kiss opens those.
		return nil, fmt.Errorf("%w: %q: http(s) stores are opened with httpstore.Open", ErrInvalidURL, rawURL)
	default:
		return nil, fmt.Errorf("%w: %q: unknown scheme %q (want file://, s3:// or mem://)", ErrInvalidURL, rawURL, u.Scheme)
	}
}

// knownScheme: a scheme of a store URL.
func knownScheme(s string) bool {
	switch strings.ToLower(s) {
	case "file", "s3", "mem", "http", "https":
		return true
	}
	return false
}
