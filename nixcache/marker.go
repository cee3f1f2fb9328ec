package nixcache

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// MaxMarkerSize bounds a GC-root marker. A larger object under gcroots/ is
// an error (fail closed), not silently truncated.
const MaxMarkerSize = 64 << 20

// ErrInvalidMarker: a marker object cannot be read as text.
var ErrInvalidMarker = errors.New("invalid gcroot marker")

// ParseMarker reads a GC-root marker in the original kiss-cache format: one
// absolute store path per line (surrounding whitespace trimmed; a path below
// a store path counts as that store path); every other line is ignored and
// counted in ignored, so callers can warn about a marker that roots nothing.
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
		if s == "" {
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
