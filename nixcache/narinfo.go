package nixcache

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidNarInfo: a narinfo cannot be understood well enough to know what
// it keeps alive. The pruner never treats such a narinfo as garbage, and
// refuses to delete anything when a reachable one is invalid.
var ErrInvalidNarInfo = errors.New("invalid narinfo")

// NarInfo is what the pruner needs from a narinfo. Fields the pruner does not
// use (hashes, signatures, CA, System) are not kept; unknown keys are ignored,
// as Nix ignores them.
type NarInfo struct {
	StorePath   string // absolute, as written
	Hash        Hash   // of StorePath
	URL         string
	Compression string
	FileSize    uint64
	NarSize     uint64
	// References are the hashes of the References entries, in order (a
	// self-reference included).
	References []Hash
	// Deriver is the hash of the Deriver entry; HasDeriver is false for none
	// or "unknown-deriver".
	Deriver     Hash
	HasDeriver  bool
	DeriverName string // "<hash>-<name>.drv", the key under log/
}

// NarKey is the key of the NAR this narinfo points to, if it is in this cache.
func (n *NarInfo) NarKey() (string, bool) { return NarKeyFromURL(n.URL) }

// ParseNarInfo parses a narinfo. storeDir is the cache's StoreDir ("" means
// /nix/store). It is strict about what decides reachability (StorePath,
// URL, References, Deriver, sizes) and ignores everything else.
//
// go-nix's narinfo.Parse is not used on this hot path: it rejects unknown
// keys (so a newer Nix's narinfo would stop the pruner) and allocates a
// 1 MiB scanner buffer per call (a million narinfos per prune). The tests
// cross-check this parser against it.
func ParseNarInfo(data []byte, storeDir string) (*NarInfo, error) {
	ni := &NarInfo{}
	if err := ParseNarInfoInto(ni, data, storeDir); err != nil {
		return nil, err
	}
	return ni, nil
}

// ParseNarInfoInto is ParseNarInfo into *ni, reusing its References slice:
// the pruner parses half a million narinfos with one NarInfo per worker.
// On error *ni is undefined.
func ParseNarInfoInto(ni *NarInfo, data []byte, storeDir string) error {
	*ni = NarInfo{References: ni.References[:0]}
	_, err := parseNarInfo(ni, data, storeDir, nil)
	return err
}

// parseNarInfo fills ni and, when trust is not nil, what checking the
// narinfo's hashes and signatures needs (kiss verify --deep).
func parseNarInfo(ni *NarInfo, data []byte, storeDir string, trust *NarInfoTrust) (*NarInfo, error) {
	if len(data) > MaxNarInfoSize {
		return nil, fmt.Errorf("%w: %d bytes is more than %d", ErrInvalidNarInfo, len(data), MaxNarInfoSize)
	}
	var seenPath, seenURL, seenRefs bool
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, fmt.Errorf("%w: line %d has no key", ErrInvalidNarInfo, lineNo)
		}
		key := line[:colon]
		val := bytes.TrimSpace(line[colon+1:])
		switch string(key) {
		case "StorePath":
			if seenPath {
				return nil, fmt.Errorf("%w: StorePath given twice", ErrInvalidNarInfo)
			}
			seenPath = true
			ni.StorePath = string(val)
			h, _, err := ParseStorePath(ni.StorePath, storeDir)
			if err == nil && strings.Count(ni.StorePath[len(strings.TrimSuffix(storeDirOr(storeDir), "/"))+1:], "/") != 0 {
				err = fmt.Errorf("%q is below a store path", ni.StorePath)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: StorePath: %v", ErrInvalidNarInfo, err)
			}
			ni.Hash = h
		case "URL":
			if seenURL {
				return nil, fmt.Errorf("%w: URL given twice", ErrInvalidNarInfo)
			}
			seenURL = true
			ni.URL = string(val)
		case "Compression":
			ni.Compression = string(val)
		case "FileSize", "NarSize":
			n, err := strconv.ParseUint(string(val), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalidNarInfo, key, err)
			}
			if key[0] == 'F' {
				ni.FileSize = n
			} else {
				ni.NarSize = n
			}
		case "References":
			if seenRefs {
				return nil, fmt.Errorf("%w: References given twice", ErrInvalidNarInfo)
			}
			seenRefs = true
			if n := bytes.Count(val, []byte{' '}) + 1; cap(ni.References) < n {
				ni.References = make([]Hash, 0, n)
			}
			for len(val) > 0 {
				var f []byte
				if i := bytes.IndexByte(val, ' '); i >= 0 {
					f, val = val[:i], val[i+1:]
				} else {
					f, val = val, nil
				}
				if len(f) == 0 {
					continue
				}
				h, ok := baseNameHash(f)
				if !ok {
					return nil, fmt.Errorf("%w: References: %q is not <hash>-<name>", ErrInvalidNarInfo, f)
				}
				ni.References = append(ni.References, h)
				if trust != nil {
					trust.References = append(trust.References, string(f))
				}
			}
		case "Deriver":
			s := string(val)
			if s == "" || s == "unknown-deriver" {
				continue
			}
			h, _, err := ParseBaseName(s)
			if err != nil {
				return nil, fmt.Errorf("%w: Deriver: %v", ErrInvalidNarInfo, err)
			}
			ni.Deriver, ni.HasDeriver, ni.DeriverName = h, true, s
		case "FileHash", "NarHash", "Sig":
			if trust != nil {
				trust.add(string(key), string(val))
			}
		}
	}
	if !seenPath {
		return nil, fmt.Errorf("%w: no StorePath", ErrInvalidNarInfo)
	}
	if ni.URL == "" {
		return nil, fmt.Errorf("%w: no URL", ErrInvalidNarInfo)
	}
	return ni, nil
}

func storeDirOr(d string) string {
	if d == "" {
		return DefaultStoreDir
	}
	return d
}
