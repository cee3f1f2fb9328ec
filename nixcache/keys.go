package nixcache

import (
	"path"
	"strings"
)

// Well-known keys and prefixes of a binary cache and of kiss itself.
const (
	CacheInfoKey      = "nix-cache-info"
	RootsPrefix       = "gcroots/"
	NarPrefix         = "nar/"
	LogPrefix         = "log/"
	RealisationPrefix = "realisations/"
	BuildTracePrefix  = "build-trace-v2/"
	DebugInfoPrefix   = "debuginfo/"
	// KissPrefix holds kiss's own objects (memo, temp files of the file
	// driver). Only KissTempPrefix is ever collected.
	KissPrefix     = ".kiss/"
	KissTempPrefix = ".kiss/tmp/"
	// NginxTempPrefix is where the shipped nginx config puts client body
	// temp files (client_body_temp_path <cache>/.tmp).
	NginxTempPrefix = ".tmp/"
)

// Kind is what a key is, for the pruner's rules.
type Kind uint8

const (
	KindOther       Kind = iota // unknown: never touched
	KindCacheInfo               // nix-cache-info: never touched
	KindRoot                    // gcroots/...: markers and leases, never collected as garbage
	KindKiss                    // .kiss/... other than temp: never touched
	KindTemp                    // stale temp files: collected after the grace period
	KindNarInfo                 // <hash>.narinfo
	KindListing                 // <hash>.ls
	KindNAR                     // nar/...
	KindLog                     // log/<drv base name>
	KindRealisation             // realisations/<id>.doi
	KindBuildTrace              // build-trace-v2/<drv>/<output>.doi
	KindDebugInfo               // debuginfo/<build-id>

	// NumKinds is the number of kinds, for arrays indexed by Kind.
	NumKinds = iota
)

var kindNames = [...]string{"other", "nix-cache-info", "gcroot", "kiss", "temp", "narinfo", "ls", "nar", "log", "realisation", "build-trace", "debuginfo"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Classify says what key is. For KindNarInfo and KindListing it also returns
// the store path hash the key belongs to.
func Classify(key string) (Kind, Hash) {
	switch {
	case key == CacheInfoKey:
		return KindCacheInfo, Hash{}
	case strings.HasPrefix(key, RootsPrefix):
		return KindRoot, Hash{}
	case strings.HasPrefix(key, KissTempPrefix), strings.HasPrefix(key, NginxTempPrefix):
		return KindTemp, Hash{}
	case strings.HasPrefix(key, KissPrefix):
		return KindKiss, Hash{}
	case strings.HasSuffix(key, ".tmp"):
		return KindTemp, Hash{}
	case strings.HasPrefix(key, NarPrefix):
		return KindNAR, Hash{}
	case strings.HasPrefix(key, LogPrefix):
		if strings.Count(key, "/") == 1 {
			return KindLog, Hash{}
		}
		return KindOther, Hash{}
	case strings.HasPrefix(key, RealisationPrefix):
		return KindRealisation, Hash{}
	case strings.HasPrefix(key, BuildTracePrefix):
		return KindBuildTrace, Hash{}
	case strings.HasPrefix(key, DebugInfoPrefix):
		return KindDebugInfo, Hash{}
	}
	if len(key) == HashLen+len(".narinfo") && strings.HasSuffix(key, ".narinfo") {
		if h, err := ParseHash(key[:HashLen]); err == nil {
			return KindNarInfo, h
		}
	}
	if len(key) == HashLen+len(".ls") && strings.HasSuffix(key, ".ls") {
		if h, err := ParseHash(key[:HashLen]); err == nil {
			return KindListing, h
		}
	}
	return KindOther, Hash{}
}

// NarInfoKey is the key of the narinfo describing the store path with hash h.
func NarInfoKey(h Hash) string { return h.String() + ".narinfo" }

// ListingKey is the key of the NAR listing (write-nar-listing=true) of h.
func ListingKey(h Hash) string { return h.String() + ".ls" }

// NarInfoKeyFor maps a store path, a References entry or a bare hash to the
// key of its narinfo (see HashOf).
func NarInfoKeyFor(ref, storeDir string) (string, error) {
	h, err := HashOf(ref, storeDir)
	if err != nil {
		return "", err
	}
	return NarInfoKey(h), nil
}

// NarKeyFromURL maps a narinfo `URL:` to the key of the NAR in this cache.
// URLs are relative to the cache root; an absolute URL (another host) or
// one that climbs out of the cache names no object here (ok == false).
func NarKeyFromURL(u string) (key string, ok bool) {
	return resolve("", u)
}

// resolve joins a relative reference to the directory dir ("" = cache root).
func resolve(dir, ref string) (string, bool) {
	if ref == "" || strings.Contains(ref, "://") || strings.HasPrefix(ref, "/") {
		return "", false
	}
	if dir == "" && cleanRelative(ref) {
		return ref, true // the usual "nar/<hash>.nar.xz": nothing to clean
	}
	k := path.Clean(path.Join(dir, ref))
	if k == "." || k == ".." || strings.HasPrefix(k, "../") {
		return "", false
	}
	return k, true
}

// cleanRelative reports whether ref is already a clean relative path: no
// empty, "." or ".." segment, no trailing slash.
func cleanRelative(ref string) bool {
	for rest := ref; ; {
		seg, more, found := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		if !found {
			return true
		}
		rest = more
	}
}

// LogDrvHash returns the hash of the derivation a log/<drv base name> key
// belongs to.
func LogDrvHash(key string) (Hash, error) {
	h, _, err := ParseBaseName(strings.TrimPrefix(key, LogPrefix))
	return h, err
}
