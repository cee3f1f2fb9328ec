package nixcache

import (
	"path"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
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
	// LockPrefix holds the lock protocol's leases (lockproto/PROTOCOL.md),
	// PruneLeaseKey the exclusive one.
	LockPrefix    = RootsPrefix + ".lock/"
	PruneLeaseKey = LockPrefix + "prune"
	// KissPrefix holds kiss's own objects (memo, temp files of the file
	// driver, storage check probes). Only KissTempPrefix is ever collected.
	KissPrefix = ".kiss/"
	// KissTempPrefix is where the file driver stages writes
	// (storage.TempPrefix; gc's TestFileDriverTempIsCollectable keeps the
	// two equal, as neither package may import the other).
	KissTempPrefix = KissPrefix + "tmp/"
	// CheckPrefix holds `kiss storage check` probes: .kiss/check/<run>/….
	CheckPrefix = KissPrefix + "check/"
	// NginxTempPrefix is where the shipped nginx config puts client body
	// temp files (client_body_temp_path <cache>/.tmp).
	NginxTempPrefix = ".tmp/"
)

// Body limits of the small objects kiss reads whole. One limit per object,
// for whoever reads or writes it.
const (
	// MaxNarInfoSize bounds a narinfo (the largest real ones, with
	// thousands of references, are a few hundred KiB).
	MaxNarInfoSize = 16 << 20
	// MaxLeaseSize bounds a lease body (lockproto/PROTOCOL.md) and a
	// storage check probe.
	MaxLeaseSize = 64 << 10
	// MaxCacheInfoSize bounds nix-cache-info.
	MaxCacheInfoSize = 4 << 10
)

// Kind is what a key is. Its Rules say how every part of kiss treats it.
type Kind uint8

const (
	KindOther       Kind = iota // anything else: never touched, never served
	KindCacheInfo               // nix-cache-info
	KindRoot                    // gcroots/<name>…: a marker (no segment starting with '.')
	KindKiss                    // .kiss/… other than temp files and check probes
	KindTemp                    // temp files: .kiss/tmp/…, .tmp/… (nginx), *.tmp
	KindNarInfo                 // <hash>.narinfo
	KindListing                 // <hash>.ls
	KindNAR                     // nar/<file>.nar[.xz|.zst|…]
	KindLog                     // log/<hash>-<name>: a derivation's base name
	KindRealisation             // realisations/<id>.doi
	KindBuildTrace              // build-trace-v2/<drv>/<output>.doi
	KindDebugInfo               // debuginfo/<build-id>
	KindLease                   // gcroots/.lock/<name>: a lock protocol lease
	KindProbe                   // .kiss/check/<run>/…: a storage check probe

	// NumKinds is the number of kinds, for arrays indexed by Kind.
	NumKinds = iota
)

// Access says who may do something with a key through the gateway.
type Access uint8

const (
	Nobody  Access = iota // refused (reads: 404, as if absent)
	Writers               // authenticated writers only
	Readers               // everyone allowed to read the cache
)

// Rules are everything kiss decides by a key's kind. A newcomer finds every
// key rule here and in Classify.
type Rules struct {
	Name string
	// ContentType is what Nix and nginx send for it (and what is stored
	// with it where the store keeps one).
	ContentType string
	// CacheControl for HTTP responses: NARs, named by their file hash,
	// never change under their key (immutable); narinfos, .ls listings and
	// debuginfo links are named by a store path or build id, and a prune
	// deletes them and a writer puts them again with other bytes (new
	// signatures, another build's NAR), so a shared cache must revalidate
	// them (no-cache: a 304 by ETag) rather than keep offering a path
	// whose NAR is gone; roots and leases change all the time.
	CacheControl string
	// Read and Write: who may GET/HEAD and PUT it through the gateway.
	Read, Write Access
	// Delete: it may be deleted over HTTP (markers, leases, probes; cache
	// content is removed by the pruner only).
	Delete bool
	// MaxBody bounds a body that is read whole and validated before it is
	// stored; 0: it is streamed, bounded only by the configured upload
	// limit.
	MaxBody int64
	// Prunable: the pruner may delete it (when unreachable and older than
	// the grace period). Never: nix-cache-info, gcroots/ (expired markers
	// aside), .kiss/ except temp files, and anything unknown.
	Prunable bool
	// Upstream: cache content an upstream binary cache may fill on a miss
	// (and that a gateway may redirect readers to the store for).
	Upstream bool
}

const (
	immutable = "public, max-age=31536000, immutable"
	noStore   = "no-store"
	noCache   = "no-cache"
	textPlain = "text/plain; charset=utf-8"
	jsonType  = "application/json"
	binary    = "application/octet-stream"
)

var rules = [NumKinds]Rules{
	KindOther:       {Name: "other", ContentType: binary, CacheControl: noCache},
	KindCacheInfo:   {Name: "nix-cache-info", ContentType: "text/x-nix-cache-info", CacheControl: "public, max-age=300", Read: Readers, Write: Writers, MaxBody: MaxCacheInfoSize},
	KindRoot:        {Name: "gcroot", ContentType: textPlain, CacheControl: noStore, Read: Readers, Write: Writers, Delete: true, MaxBody: MaxMarkerSize},
	KindKiss:        {Name: "kiss", ContentType: binary, CacheControl: noCache},
	KindTemp:        {Name: "temp", ContentType: binary, CacheControl: noCache, Prunable: true},
	KindNarInfo:     {Name: "narinfo", ContentType: "text/x-nix-narinfo", CacheControl: noCache, Read: Readers, Write: Writers, MaxBody: MaxNarInfoSize, Prunable: true, Upstream: true},
	KindListing:     {Name: "ls", ContentType: jsonType, CacheControl: noCache, Read: Readers, Write: Writers, Prunable: true, Upstream: true},
	KindNAR:         {Name: "nar", ContentType: "application/x-nix-nar", CacheControl: immutable, Read: Readers, Write: Writers, Prunable: true, Upstream: true},
	KindLog:         {Name: "log", ContentType: textPlain, CacheControl: noCache, Read: Readers, Write: Writers, Prunable: true, Upstream: true},
	KindRealisation: {Name: "realisation", ContentType: jsonType, CacheControl: noCache, Read: Readers, Write: Writers, Prunable: true, Upstream: true},
	KindBuildTrace:  {Name: "build-trace", ContentType: jsonType, CacheControl: noCache, Read: Readers, Write: Writers, Prunable: true},
	KindDebugInfo:   {Name: "debuginfo", ContentType: jsonType, CacheControl: noCache, Read: Readers, Write: Writers, Prunable: true, Upstream: true},
	KindLease:       {Name: "lease", ContentType: jsonType, CacheControl: noStore, Read: Writers, Write: Writers, Delete: true, MaxBody: MaxLeaseSize},
	KindProbe:       {Name: "check-probe", ContentType: binary, CacheControl: noStore, Read: Writers, Write: Writers, Delete: true, MaxBody: MaxLeaseSize},
}

// Rules returns the rules of the kind.
func (k Kind) Rules() Rules {
	if int(k) < len(rules) {
		return rules[k]
	}
	return rules[KindOther]
}

func (k Kind) String() string {
	if int(k) < len(rules) {
		return rules[k].Name
	}
	return "unknown"
}

// Classify says what key is: the one classification every part of kiss
// uses (the pruner, the gateway, the storage drivers' callers). Shapes are
// strict: a key that is not exactly what Nix or kiss writes is KindOther,
// which nothing deletes, serves or accepts. For KindNarInfo and
// KindListing it also returns the store path hash the key belongs to.
//
// Classify judges the layout only: a key must also pass
// storage.ValidateKey (printable ASCII, no traversal) to be stored.
func Classify(key string) (Kind, Hash) {
	first, rest, nested := strings.Cut(key, "/")
	if !nested {
		return classifyTop(key)
	}
	switch first + "/" {
	case RootsPrefix:
		if name, ok := strings.CutPrefix(rest, ".lock/"); ok {
			if oneSegment(name) {
				return KindLease, Hash{}
			}
			return KindOther, Hash{}
		}
		if cleanNoDot(rest) {
			return KindRoot, Hash{}
		}
		return KindOther, Hash{}
	case KissPrefix:
		switch {
		case strings.HasPrefix(key, KissTempPrefix):
			return KindTemp, Hash{}
		case strings.HasPrefix(key, CheckPrefix) && strings.Contains(key[len(CheckPrefix):], "/") && cleanNoDot(key[len(CheckPrefix):]):
			return KindProbe, Hash{}
		}
		return KindKiss, Hash{}
	case NginxTempPrefix:
		return KindTemp, Hash{}
	}
	if strings.HasSuffix(key, ".tmp") {
		return KindTemp, Hash{}
	}
	switch first + "/" {
	case NarPrefix:
		if oneSegment(rest) && strings.Contains(rest, ".nar") {
			return KindNAR, Hash{}
		}
	case LogPrefix:
		// a derivation's base name, which says whose log it is (a log
		// named otherwise could never be decided, so never pruned)
		if _, ok := baseNameHash(rest); ok && oneSegment(rest) {
			return KindLog, Hash{}
		}
	case RealisationPrefix:
		if oneSegment(rest) && strings.HasSuffix(rest, ".doi") {
			return KindRealisation, Hash{}
		}
	case BuildTracePrefix:
		if cleanNoDot(rest) {
			return KindBuildTrace, Hash{}
		}
	case DebugInfoPrefix:
		if oneSegment(rest) {
			return KindDebugInfo, Hash{}
		}
	}
	return KindOther, Hash{}
}

// classifyTop classifies a key with no slash.
func classifyTop(key string) (Kind, Hash) {
	switch {
	case key == CacheInfoKey:
		return KindCacheInfo, Hash{}
	case len(key) == HashLen+len(".narinfo") && strings.HasSuffix(key, ".narinfo"):
		if h, ok := decodeHash(key[:HashLen]); ok {
			return KindNarInfo, h
		}
	case len(key) == HashLen+len(".ls") && strings.HasSuffix(key, ".ls"):
		if h, ok := decodeHash(key[:HashLen]); ok {
			return KindListing, h
		}
	case strings.HasSuffix(key, ".tmp"):
		return KindTemp, Hash{}
	}
	return KindOther, Hash{}
}

// oneSegment: s is one path segment, not empty, not starting with a dot.
func oneSegment(s string) bool {
	return s != "" && s[0] != '.' && !strings.Contains(s, "/")
}

// ContentType is the content type of the object at key.
func ContentType(key string) string {
	k, _ := Classify(key)
	return k.Rules().ContentType
}

// NarInfoKey is the key of the narinfo describing the store path with hash h.
func NarInfoKey(h Hash) string { return hashKey(h, ".narinfo") }

// ListingKey is the key of the NAR listing (write-nar-listing=true) of h.
func ListingKey(h Hash) string { return hashKey(h, ".ls") }

// hashKey is h's nixbase32 form and suffix, built with one allocation (a
// pruner makes one for every narinfo it reads or stats).
func hashKey(h Hash, suffix string) string {
	var b [HashLen + len(".narinfo")]byte
	nixbase32.Encode(b[:HashLen], h[:])
	n := HashLen + copy(b[HashLen:], suffix)
	return string(b[:n])
}

// NarInfoKeyFor maps a store path, a References entry or a bare hash to the
// key of its narinfo (see HashOf).
func NarInfoKeyFor(ref, storeDir string) (string, error) {
	h, err := HashOf(ref, storeDir)
	if err != nil {
		return "", err
	}
	return NarInfoKey(h), nil
}

// NarKeyFromURL maps a narinfo `URL:` to the key of the object in this cache
// that a client fetches for it: what the pruner keeps (and kiss verify
// checks) for a narinfo. A URL with a scheme (another host) names no object
// here (ok == false). Any other URL is a path from the cache root, resolved
// as clients do: Nix's file:// store reads <cache> + "/" + URL, so a leading
// "/" stays in the cache ("/nar/x" is nar/x; nginx merges the slashes too),
// and an HTTP client removes dot segments, which stop at the root ("../nar/x"
// from a cache served at / is nar/x). Where clients disagree (file:// reads
// "../nar/x" outside the cache), the key kept is the one inside it: keeping
// more is safe, keeping less loses a NAR a rooted narinfo needs (I2).
//
// Writers are held to the narrower NarKeyFromPlainURL; every URL it accepts
// maps to the same key here. Only such a plain URL's NAR is required (the
// pruner refuses when it is missing); what another URL names is kept if it
// is there, since clients do not agree that it is this cache's.
func NarKeyFromURL(u string) (key string, ok bool) {
	if u == "" || strings.Contains(u, "://") {
		return "", false
	}
	if cleanRelative(u) {
		return u, true // the usual "nar/<hash>.nar.xz": nothing to clean
	}
	k := strings.TrimPrefix(path.Clean("/"+u), "/")
	return k, k != ""
}

// NarKeyFromPlainURL is NarKeyFromURL for what a writer may store (the
// gateway's rule): a relative URL that stays within the cache for every
// client ("nar/x", "./nar/x"); a leading "/" or a ".." above the root is
// refused (ok == false), as clients resolve those differently.
func NarKeyFromPlainURL(u string) (key string, ok bool) {
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
