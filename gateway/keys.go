package gateway

import (
	"fmt"
	"strings"

	"github.com/kiss-cache/kiss/storage"
)

// kind classifies a cache key; it decides who may write it, how it is
// validated and which caching headers it gets.
type kind int

const (
	kindInvalid     kind = iota
	kindCacheInfo        // nix-cache-info
	kindNarinfo          // <hash>.narinfo
	kindNar              // nar/<file>
	kindListing          // <hash>.ls
	kindLog              // log/<drv basename>
	kindRealisation      // realisations/<id>.doi
	kindBuildTrace       // build-trace-v2/...
	kindDebuginfo        // debuginfo/<build-id>
	kindMarker           // gcroots/... (not under a dot segment)
	kindLease            // gcroots/.lock/<name>
	kindProbe            // .kiss/check/<run>/... (kiss storage check probes)
)

// Key prefixes the gateway treats specially.
const (
	gcrootsPrefix = "gcroots/"
	lockPrefix    = "gcroots/.lock/"
	// pruneLeaseKey is the exclusive prune lease (lockproto/PROTOCOL.md).
	pruneLeaseKey = "gcroots/.lock/prune"
)

// nixbase32 is the alphabet of store path hashes.
const nixbase32 = "0123456789abcdfghijklmnpqrsvwxyz"

func isHash(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(nixbase32, s[i]) < 0 {
			return false
		}
	}
	return true
}

// classify maps a key to its kind. Keys failing storage.ValidateKey (traversal,
// empty segments, control bytes) are kindInvalid, as are shapes a Nix cache
// never has: the gateway refuses to write what the pruner would not know.
func classify(key string) (kind, error) {
	if err := storage.ValidateKey(key); err != nil {
		return kindInvalid, err
	}
	segs := strings.Split(key, "/")
	switch {
	case key == "nix-cache-info":
		return kindCacheInfo, nil
	case len(segs) == 1 && strings.HasSuffix(key, ".narinfo") && isHash(strings.TrimSuffix(key, ".narinfo")):
		return kindNarinfo, nil
	case len(segs) == 1 && strings.HasSuffix(key, ".ls") && isHash(strings.TrimSuffix(key, ".ls")):
		return kindListing, nil
	case len(segs) == 2 && segs[0] == "nar" && strings.Contains(segs[1], ".nar") && !strings.HasPrefix(segs[1], "."):
		return kindNar, nil
	case len(segs) == 2 && segs[0] == "log" && !strings.HasPrefix(segs[1], "."):
		return kindLog, nil
	case len(segs) == 2 && segs[0] == "realisations" && strings.HasSuffix(segs[1], ".doi") && !strings.HasPrefix(segs[1], "."):
		return kindRealisation, nil
	case len(segs) >= 2 && segs[0] == "build-trace-v2" && !hasDotSegment(segs[1:]):
		return kindBuildTrace, nil
	case len(segs) == 2 && segs[0] == "debuginfo" && !strings.HasPrefix(segs[1], "."):
		return kindDebuginfo, nil
	case len(segs) == 3 && segs[0] == "gcroots" && segs[1] == ".lock" && !strings.HasPrefix(segs[2], "."):
		return kindLease, nil
	case len(segs) >= 2 && segs[0] == "gcroots" && !hasDotSegment(segs[1:]):
		return kindMarker, nil
	case len(segs) >= 4 && segs[0] == ".kiss" && segs[1] == "check" && !hasDotSegment(segs[2:]):
		// `kiss storage check https://…` proves the guarantees through
		// the gateway with these probes; writers only, always removable.
		return kindProbe, nil
	}
	return kindInvalid, fmt.Errorf("%w: %q is not a key a Nix binary cache or kiss uses", storage.ErrInvalidKey, key)
}

func hasDotSegment(segs []string) bool {
	for _, s := range segs {
		if strings.HasPrefix(s, ".") {
			return true
		}
	}
	return false
}

// contentType is what Nix and nginx (types { text/x-nix-narinfo narinfo; … })
// send for each kind.
func contentType(k kind, key string) string {
	switch k {
	case kindCacheInfo:
		return "text/x-nix-cache-info"
	case kindNarinfo:
		return "text/x-nix-narinfo"
	case kindNar:
		return "application/x-nix-nar"
	case kindListing, kindRealisation, kindDebuginfo, kindLease:
		return "application/json"
	case kindLog, kindMarker:
		return "text/plain; charset=utf-8"
	}
	if strings.HasPrefix(key, "build-trace-v2/") && strings.HasSuffix(key, ".doi") {
		return "application/json"
	}
	return "application/octet-stream"
}

// cacheControl: content-addressed objects never change under their key
// (immutable); roots and leases change all the time (no-store).
func cacheControl(k kind) string {
	switch k {
	case kindNarinfo, kindNar, kindListing, kindDebuginfo:
		return "public, max-age=31536000, immutable"
	case kindMarker, kindLease, kindProbe:
		return "no-store"
	}
	return "no-cache"
}

// mutable reports whether DELETE is allowed for the kind (markers and leases
// only: cache content is removed by the pruner, never over HTTP).
func mutable(k kind) bool { return k == kindMarker || k == kindLease || k == kindProbe }

// writersOnly: kinds that not even reading is open to readers (leases, as
// in the original's lock directory, and storage-check probes).
func writersOnly(k kind) bool { return k == kindLease || k == kindProbe }
