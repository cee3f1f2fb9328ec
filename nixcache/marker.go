package nixcache

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxMarkerSize bounds a GC-root marker, for the pruner that reads it and
// for every writer alike (one store path a line: about 10 000 paths). A
// larger marker is an error (fail closed), never silently truncated.
const MaxMarkerSize = 1 << 20

var (
	// ErrInvalidMarker: a marker object cannot be read as text, or a writer
	// offered a body the pruner would not read as a root.
	ErrInvalidMarker = errors.New("invalid gcroot marker")
	// ErrInvalidMarkerName: a name that is not where the pruner reads
	// markers (empty, outside gcroots/, or with a segment starting with '.').
	ErrInvalidMarkerName = errors.New("invalid gcroot marker name")
)

// IsMarkerKey reports whether key is one the pruner reads as a marker:
// below gcroots/, at any depth, with no empty segment and no segment
// starting with a dot (gcroots/.lock/ holds the leases; dot-names are
// writers' temp files). It checks the layout only: a key must also pass
// storage.ValidateKey to be stored.
func IsMarkerKey(key string) bool {
	rel, ok := strings.CutPrefix(key, RootsPrefix)
	return ok && cleanNoDot(rel)
}

// cleanNoDot reports whether rel is one or more non-empty slash-separated
// segments, none starting with a dot.
func cleanNoDot(rel string) bool {
	for {
		seg, rest, found := strings.Cut(rel, "/")
		if seg == "" || seg[0] == '.' {
			return false
		}
		if !found {
			return true
		}
		rel = rest
	}
}

// MarkerKey returns the key of the marker called name ("web1", "ci/main";
// a leading "gcroots/" is accepted), or ErrInvalidMarkerName for a name the
// pruner would never read.
func MarkerKey(name string) (string, error) {
	key := RootsPrefix + strings.TrimPrefix(name, RootsPrefix)
	if !IsMarkerKey(key) {
		return "", fmt.Errorf("%w: %q (want NAME or DIR/NAME, no empty segment, none starting with '.': the pruner never reads those)", ErrInvalidMarkerName, name)
	}
	return key, nil
}

// ParseMarker reads a GC-root marker in the original kiss-cache format: one
// absolute store path per line (surrounding whitespace trimmed; a path below
// a store path counts as that store path); every other line is ignored and
// counted in ignored. A marker that yields no root is for the caller to
// judge (the pruner refuses to run while one exists: it is what a write
// cut short by a full disk leaves).
func ParseMarker(data []byte, storeDir string) (roots []Hash, ignored int, err error) {
	if len(data) > MaxMarkerSize {
		return nil, 0, fmt.Errorf("%w: %d bytes is more than %d", ErrInvalidMarker, len(data), MaxMarkerSize)
	}
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		h, _, perr := ParseStorePath(s, storeDir)
		if perr != nil {
			ignored++
			continue
		}
		roots = append(roots, h)
	}
	return roots, ignored, nil
}

// ValidateMarker is the writers' rule, stricter than the reader: a marker
// body is UTF-8, at most MaxMarkerSize, names at least one store path in
// storeDir, and every other line is blank or a "#" comment, so nothing a
// writer meant as a root is silently ignored by the pruner.
func ValidateMarker(data []byte, storeDir string) error {
	if len(data) > MaxMarkerSize {
		return fmt.Errorf("%w: %d bytes is more than %d", ErrInvalidMarker, len(data), MaxMarkerSize)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not UTF-8", ErrInvalidMarker)
	}
	paths := 0
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, err := ParseStorePath(line, storeDir); err != nil {
			if len(line) > 120 {
				line = line[:120] + "…"
			}
			return fmt.Errorf("%w: line %d is not a store path in %s: %q", ErrInvalidMarker, i+1, storeDirOr(storeDir), line)
		}
		paths++
	}
	if paths == 0 {
		return fmt.Errorf("%w: it names no store path", ErrInvalidMarker)
	}
	return nil
}

// FormatMarker renders store paths as a marker body.
func FormatMarker(paths []string) []byte {
	var b bytes.Buffer
	for _, p := range paths {
		b.WriteString(p)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ParseCacheInfo returns the StoreDir of a nix-cache-info ("" if absent).
func ParseCacheInfo(data []byte) string {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "StoreDir:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ErrInvalidCacheInfo: a nix-cache-info a writer offered that would change
// the store directory kiss reads the cache with.
var ErrInvalidCacheInfo = errors.New("invalid nix-cache-info")

// ValidateCacheInfo accepts a nix-cache-info for a cache whose store
// directory is storeDir ("" means /nix/store): UTF-8, and every StoreDir
// line naming exactly storeDir, none meaning the default (as ParseCacheInfo
// is read by the pruner and the root registry). Anything else would make
// every marker and narinfo name paths outside the cache's store directory:
// the pruner would refuse to run, and writers to root their paths.
func ValidateCacheInfo(data []byte, storeDir string) error {
	want := storeDirOr(storeDir)
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not UTF-8", ErrInvalidCacheInfo)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "StoreDir:"); ok && strings.TrimSpace(v) != want {
			return fmt.Errorf("%w: StoreDir %q, but this cache's store directory is %s", ErrInvalidCacheInfo, strings.TrimSpace(v), want)
		}
	}
	if got := storeDirOr(ParseCacheInfo(data)); got != want {
		return fmt.Errorf("%w: no StoreDir means %s, but this cache's store directory is %s", ErrInvalidCacheInfo, got, want)
	}
	return nil
}
