package synth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Config describes the cache to generate. Zero fields take the defaults
// documented on each field (see Defaults).
type Config struct {
	// Paths is the total number of narinfos (outputs, derivers and the
	// per-root system paths), live and garbage together. Required.
	Paths int
	// Seed makes the cache reproducible.
	Seed uint64
	// Roots is the number of markers under gcroots/ (default 8).
	Roots int
	// GarbageFraction is the share of output narinfos that no root reaches
	// (default 0.5).
	GarbageFraction float64
	// RefsPerPath is the mean number of references of an output (default 10).
	RefsPerPath float64
	// DrvFraction is the share of outputs whose .drv narinfo is also in the
	// cache (default 0.1).
	DrvFraction float64
	// LsFraction is the share of narinfos with a <hash>.ls listing (default 0.1).
	LsFraction float64
	// LogFraction is the share of outputs with a log/<drv> entry (default 0.05).
	LogFraction float64
	// SharedNARFraction is the share of garbage narinfos whose NAR is the
	// same file as another narinfo's (default 0.01).
	SharedNARFraction float64
	// OrphanNARFraction is the number of NARs without any narinfo, as a share
	// of Paths (default 0.01).
	OrphanNARFraction float64
	// NewbornFraction is the share of garbage outputs uploaded "just now"
	// (mtime = Now), which a prune with a grace period must keep (default 0.002).
	NewbornFraction float64
	// Age is how old every other object is at least (default 30 days); the
	// file writer spreads mtimes over [Now-2*Age, Now-Age].
	Age time.Duration
	// Now is the reference time for mtimes (default time.Now()).
	Now time.Time
	// NARBody is the size in bytes of each fake NAR body (default 64).
	NARBody int
	// ConsistentNARs makes FileSize and FileHash describe the actual fake
	// body (so `kiss verify` hash checks pass) instead of realistic sizes.
	ConsistentNARs bool
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	def := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Roots == 0 {
		c.Roots = 8
	}
	def(&c.GarbageFraction, 0.5)
	def(&c.RefsPerPath, 10)
	def(&c.DrvFraction, 0.1)
	def(&c.LsFraction, 0.1)
	def(&c.LogFraction, 0.05)
	def(&c.SharedNARFraction, 0.01)
	def(&c.OrphanNARFraction, 0.01)
	def(&c.NewbornFraction, 0.002)
	if c.Age == 0 {
		c.Age = 30 * 24 * time.Hour
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if c.NARBody == 0 {
		c.NARBody = 64
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	frac := func(name string, v float64, most float64) {
		if v < 0 || v > most || math.IsNaN(v) {
			errs = append(errs, fmt.Errorf("%s = %v: want 0..%v", name, v, most))
		}
	}
	if c.Paths < 4*c.Roots || c.Paths < 16 {
		errs = append(errs, fmt.Errorf("paths = %d: want at least 16 and 4 per root (%d roots)", c.Paths, c.Roots))
	}
	if c.Paths > math.MaxInt32/2 {
		errs = append(errs, fmt.Errorf("paths = %d: too many", c.Paths))
	}
	if c.Roots < 1 {
		errs = append(errs, fmt.Errorf("roots = %d: want at least 1", c.Roots))
	}
	frac("garbage fraction", c.GarbageFraction, 0.95)
	frac("drv fraction", c.DrvFraction, 1)
	frac("ls fraction", c.LsFraction, 1)
	frac("log fraction", c.LogFraction, 1)
	frac("shared NAR fraction", c.SharedNARFraction, 1)
	frac("orphan NAR fraction", c.OrphanNARFraction, 1)
	frac("newborn fraction", c.NewbornFraction, 1)
	if c.RefsPerPath < 0 || c.RefsPerPath > 200 {
		errs = append(errs, fmt.Errorf("refs per path = %v: want 0..200", c.RefsPerPath))
	}
	if c.NARBody < 1 || c.NARBody > 1<<20 {
		errs = append(errs, fmt.Errorf("NAR body = %d: want 1..1MiB", c.NARBody))
	}
	return errors.Join(errs...)
}

// Kind says what a store path is.
type Kind uint8

const (
	// Output is an ordinary build output.
	Output Kind = iota
	// Drv is a .drv file uploaded as its own narinfo (nix copy --derivation).
	Drv
	// System is the per-root aggregate (a "nixos-system-…" path) named by a marker.
	System
)

// Path is one narinfo of the synthetic cache. Refs and Deriver are indices
// into Cache.Paths; refs always point at lower indices or at the path itself.
type Path struct {
	Kind Kind
	// Name is the part after "<hash>-".
	Name string
	Refs []int32
	// Deriver is the index of the .drv narinfo, or -1 when it is not in the
	// cache (the Deriver line then names a drv that is absent, as is common).
	Deriver int32
	// NAR is the index into Cache.NARs of the file this narinfo's URL names.
	NAR int32
	// Ls and Log: a <hash>.ls and a log/<deriver> exist for this path.
	Ls, Log bool
	// Newborn: uploaded just now (mtime = Config.Now).
	Newborn bool
	// Reachable from a marker (computed, never assumed).
	Reachable bool
	// Depth is the shortest distance from a marker (reachable paths only).
	Depth int32

	hash    [20]byte
	drvHash [20]byte // the Deriver line's hash
}

// NAR is one file under nar/.
type NAR struct {
	fileHash [32]byte
	// FileSize and NarSize as the narinfo states them.
	FileSize, NarSize int64
	// Orphan: no narinfo names it.
	Orphan  bool
	Newborn bool
	// Live: named by a reachable narinfo (computed).
	Live bool
}

// Cache is a generated cache description; objects are rendered on demand so
// a million paths need about 100 MB, not the cache's size.
type Cache struct {
	Config Config
	Paths  []Path
	NARs   []NAR
	// Systems are the indices of the System paths, one per marker.
	Systems []int32
	// MaxDepth is the longest shortest-path from a marker (BFS levels - 1).
	MaxDepth int
}

// Generate builds the cache description for c.
func Generate(c Config) (*Cache, error) {
	c = c.Defaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	g := &gen{c: c, rng: rand.New(rand.NewPCG(c.Seed, 0x6b697373))}
	g.run()
	return g.cache, nil
}

type gen struct {
	c     Config
	rng   *rand.Rand
	cache *Cache
}

// hashOf derives the 20-byte store hash of the i-th object of a kind.
func (g *gen) hashOf(kind string, i int) [20]byte {
	var b [8 + 8 + 16]byte
	binary.LittleEndian.PutUint64(b[:8], g.c.Seed)
	binary.LittleEndian.PutUint64(b[8:16], uint64(i))
	copy(b[16:], kind)
	s := sha256.Sum256(b[:])
	var h [20]byte
	copy(h[:], s[:])
	return h
}

// refCount draws a skewed count with the given mean: most paths have a few
// references, some have dozens (as in nixpkgs).
func (g *gen) refCount(mean float64) int {
	if mean == 0 {
		return 0
	}
	k := int(-mean * math.Log(1-g.rng.Float64()))
	return min(k, 8*int(mean)+8)
}

func (g *gen) run() {
	c := g.c
	n := c.Paths
	// Budget: systems (live) + outputs + drvs of some outputs = Paths.
	systems := c.Roots
	outputs := int(float64(n-systems) / (1 + c.DrvFraction))
	drvs := n - systems - outputs
	garbage := int(float64(outputs) * c.GarbageFraction)
	live := outputs - garbage
	if live < 1 {
		live, garbage = 1, outputs-1
	}

	cache := &Cache{Config: c, Paths: make([]Path, 0, n)}
	g.cache = cache
	newNAR := func(newborn bool) int32 {
		var nar NAR
		nar.fileHash = sha256.Sum256(g.narBody(len(cache.NARs)))
		// Log-normal sizes: median ~150 kB compressed, a long tail of huge ones.
		nar.FileSize = int64(math.Exp(12 + 2*g.rng.NormFloat64()))
		nar.FileSize = max(nar.FileSize, 120)
		nar.NarSize = nar.FileSize * int64(2+g.rng.IntN(3))
		if c.ConsistentNARs {
			nar.FileSize = int64(c.NARBody)
		}
		nar.Newborn = newborn
		cache.NARs = append(cache.NARs, nar)
		return int32(len(cache.NARs) - 1)
	}
	add := func(p Path) int32 {
		p.hash = g.hashOf("path", len(cache.Paths))
		cache.Paths = append(cache.Paths, p)
		return int32(len(cache.Paths) - 1)
	}

	// Live outputs first: indices 0..live-1, so refs into the past are live.
	// Half of each path's references fall in a sliding window behind it
	// (recent packages: bounded depth), half are drawn with a strong bias
	// towards the oldest, most popular paths (glibc, bash, openssl, ...).
	window := max(64, live/30)
	pick := func(lo, hi int, popular bool) int32 {
		if popular {
			u := g.rng.Float64()
			return int32(lo + int(float64(hi-lo)*u*u*u))
		}
		wlo := max(lo, hi-window)
		return int32(wlo + g.rng.IntN(hi-wlo))
	}
	referenced := make([]bool, 0, live)
	drvBudget := drvs
	mkOutput := func(liveLo, liveHi, garbLo, garbHi int) int32 {
		i := len(cache.Paths)
		p := Path{Kind: Output, Name: g.name(i), Deriver: -1}
		k := g.refCount(c.RefsPerPath)
		for range k {
			var r int32
			switch {
			case garbHi > garbLo && g.rng.IntN(2) == 0:
				r = pick(garbLo, garbHi, false)
			case liveHi > liveLo:
				r = pick(liveLo, liveHi, g.rng.IntN(2) == 0)
			default:
				continue
			}
			p.Refs = append(p.Refs, r)
		}
		if g.rng.IntN(10) < 3 {
			p.Refs = append(p.Refs, int32(i)) // self-reference, as many outputs have
		}
		slices.Sort(p.Refs)
		p.Refs = slices.Compact(p.Refs)
		p.drvHash = g.hashOf("drv", i)
		p.Ls = g.rng.Float64() < c.LsFraction
		p.Log = g.rng.Float64() < c.LogFraction
		p.NAR = -1
		return add(p)
	}
	for i := range live {
		idx := mkOutput(0, i, 0, 0)
		for _, r := range cache.Paths[idx].Refs {
			if int(r) != i {
				referenced[r] = true
			}
		}
		referenced = append(referenced, false)
	}
	// Systems: each marker names one system path whose references cover
	// its share of the live paths nothing else references (the "tops").
	var tops []int32
	for i, ref := range referenced {
		if !ref {
			tops = append(tops, int32(i))
		}
	}
	for r := range systems {
		p := Path{Kind: System, Name: fmt.Sprintf("nixos-system-host-%02d-24.11.%d", r, 700+r), Deriver: -1, NAR: -1}
		for t := r; t < len(tops); t += systems {
			p.Refs = append(p.Refs, tops[t])
		}
		p.Refs = append(p.Refs, pick(0, live, true))
		slices.Sort(p.Refs)
		p.Refs = slices.Compact(p.Refs)
		p.drvHash = g.hashOf("sysdrv", r)
		cache.Systems = append(cache.Systems, add(p))
	}
	// Garbage outputs: older versions, referencing live paths and older
	// garbage. The last few are newborns: an upload in flight, not rooted
	// yet. They reference only live paths (a fresh closure is uploaded
	// whole), because a pruner treats young narinfos as roots and so keeps
	// their closure: old garbage must not hide in it.
	garbLo := len(cache.Paths)
	newborns := int(math.Ceil(float64(garbage) * c.NewbornFraction))
	if c.NewbornFraction == 0 {
		newborns = 0
	}
	for j := range garbage {
		if j >= garbage-newborns {
			cache.Paths[mkOutput(0, live, garbLo, garbLo)].Newborn = true
			continue
		}
		mkOutput(0, live, garbLo, garbLo+j)
	}
	// Deriver narinfos, for a share of the outputs (drvBudget of them). A
	// drv references the drvs of its output's references that are also
	// uploaded (inputDrvs) — those come earlier, as refs point backwards.
	outputsEnd := len(cache.Paths)
	hasDrv := make([]int32, outputsEnd)
	for i := range hasDrv {
		hasDrv[i] = -1
	}
	for i := 0; i < outputsEnd && drvBudget > 0; i++ {
		p := &cache.Paths[i]
		if p.Kind != Output || g.rng.Float64() >= c.DrvFraction*1.05 && outputsEnd-i > drvBudget {
			continue
		}
		d := Path{Kind: Drv, Name: p.Name + ".drv", Deriver: -1, NAR: -1, Newborn: p.Newborn}
		for _, r := range p.Refs {
			if hasDrv[r] >= 0 {
				d.Refs = append(d.Refs, hasDrv[r])
			}
		}
		di := add(d)
		cache.Paths[di].hash = p.drvHash
		hasDrv[i] = di
		cache.Paths[i].Deriver = di
		drvBudget--
	}
	// Whatever the drv draw left over becomes more (old) garbage outputs, so
	// the cache has exactly Config.Paths narinfos.
	for ; drvBudget > 0; drvBudget-- {
		mkOutput(0, live, garbLo, garbLo+garbage)
	}

	// NARs: one per narinfo, except shared ones (a garbage narinfo pointing
	// at an earlier narinfo's NAR: the NAR must stay while one is live).
	for i := range cache.Paths {
		p := &cache.Paths[i]
		if p.Kind == Output && i >= garbLo && i > 0 && !p.Newborn && g.rng.Float64() < c.SharedNARFraction {
			p.NAR = cache.Paths[g.rng.IntN(i)].NAR
			continue
		}
		p.NAR = newNAR(p.Newborn)
	}
	orphans := int(float64(n) * c.OrphanNARFraction)
	for range orphans {
		cache.NARs[newNAR(false)].Orphan = true
	}
	g.reach()
}

// reach marks what a pruner following References and Deriver keeps.
func (g *gen) reach() {
	cache := g.cache
	var frontier []int32
	for _, s := range cache.Systems {
		cache.Paths[s].Reachable = true
		frontier = append(frontier, s)
	}
	depth := 0
	for len(frontier) > 0 {
		var next []int32
		for _, i := range frontier {
			p := &cache.Paths[i]
			p.Depth = int32(depth)
			cache.NARs[p.NAR].Live = true
			visit := func(r int32) {
				if !cache.Paths[r].Reachable {
					cache.Paths[r].Reachable = true
					next = append(next, r)
				}
			}
			for _, r := range p.Refs {
				visit(r)
			}
			if p.Deriver >= 0 {
				visit(p.Deriver)
			}
		}
		if len(next) > 0 {
			depth++
		}
		frontier = next
	}
	cache.MaxDepth = depth
}

// PackageNames are the package names synthetic paths are called by (also
// internal/vstore's).
var PackageNames = []string{
	"glibc", "bash", "coreutils", "openssl", "zlib", "gcc-unwrapped", "python3", "perl", "ncurses",
	"readline", "libffi", "sqlite", "curl", "xz", "bzip2", "gnused", "gnugrep", "gawk", "findutils",
	"systemd", "util-linux", "dbus", "glib", "gtk+3", "cairo", "pango", "harfbuzz", "freetype",
	"fontconfig", "libpng", "libjpeg-turbo", "mesa", "llvm", "clang", "rustc", "cargo", "go",
	"nodejs", "openjdk", "ghc", "icu", "boost", "qtbase", "libxml2", "libxslt", "git", "vim",
	"emacs", "nginx", "postgresql", "redis", "ffmpeg", "gstreamer", "pipewire", "wayland",
	"libX11", "libxcb", "kernel-modules", "linux", "firmware", "nix", "man-db", "texinfo",
	"python3.12-requests", "python3.12-numpy", "python3.12-setuptools", "perl5.38-JSON",
	"rust-lib-serde", "haskell-aeson", "node-lodash", "gettext", "libiconv", "expat", "pcre2",
}

// OutputSuffixes are the output names appended to them, weighted ("" most).
var OutputSuffixes = []string{"", "", "", "", "-dev", "-lib", "-man", "-doc", "-bin", "-debug"}

func (g *gen) name(i int) string {
	base := PackageNames[g.rng.IntN(len(PackageNames))]
	major, minor, patch := 1+g.rng.IntN(20), g.rng.IntN(40), g.rng.IntN(12)
	v := strconv.Itoa(major) + "." + strconv.Itoa(minor) + "." + strconv.Itoa(patch)
	return base + "-" + v + OutputSuffixes[g.rng.IntN(len(OutputSuffixes))]
}

// narBody is the fake content of NAR number i: deterministic and unique, so
// FileHash can be its real digest.
func (g *gen) narBody(i int) []byte {
	return narBody(g.c.Seed, i, g.c.NARBody)
}

func narBody(seed uint64, i, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	for j := 0; j < len(b); j += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[j:], w[:])
	}
	return b
}

// StoreHash is the 32-character nix-base32 hash of path i.
func (c *Cache) StoreHash(i int) string { return nixbase32.EncodeToString(c.Paths[i].hash[:]) }

// BaseName is "<hash>-<name>", the form References lines use.
func (c *Cache) BaseName(i int) string { return c.StoreHash(i) + "-" + c.Paths[i].Name }

// StorePath is the absolute store path of path i.
func (c *Cache) StorePath(i int) string { return "/nix/store/" + c.BaseName(i) }

// NarinfoKey is the object key of path i's narinfo.
func (c *Cache) NarinfoKey(i int) string { return c.StoreHash(i) + ".narinfo" }

// LsKey is the object key of path i's listing.
func (c *Cache) LsKey(i int) string { return c.StoreHash(i) + ".ls" }

// DrvBaseName is the basename of path i's Deriver line ("<hash>-<name>.drv").
func (c *Cache) DrvBaseName(i int) string {
	p := &c.Paths[i]
	if p.Deriver >= 0 {
		return c.BaseName(int(p.Deriver))
	}
	return nixbase32.EncodeToString(p.drvHash[:]) + "-" + p.Name + ".drv"
}

// LogKey is the object key of path i's build log.
func (c *Cache) LogKey(i int) string { return "log/" + c.DrvBaseName(i) }

// NARKey is the object key of NAR n.
func (c *Cache) NARKey(n int) string {
	return "nar/" + nixbase32.EncodeToString(c.NARs[n].fileHash[:]) + ".nar.zst"
}

// MarkerKey is the key of marker r.
func (c *Cache) MarkerKey(r int) string { return fmt.Sprintf("gcroots/host-%02d", r) }

// Marker renders marker r: the store path it roots, one per line.
func (c *Cache) Marker(r int) []byte {
	return []byte(c.StorePath(int(c.Systems[r])) + "\n")
}

// NARBody renders NAR n's fake body.
func (c *Cache) NARBody(n int) []byte { return narBody(c.Config.Seed, n, c.Config.NARBody) }

// Narinfo renders path i's narinfo text.
func (c *Cache) Narinfo(i int) []byte {
	p := &c.Paths[i]
	nar := &c.NARs[p.NAR]
	var b strings.Builder
	b.Grow(1024)
	b.WriteString("StorePath: ")
	b.WriteString(c.StorePath(i))
	b.WriteString("\nURL: ")
	b.WriteString(c.NARKey(int(p.NAR)))
	b.WriteString("\nCompression: zstd\nFileHash: sha256:")
	b.WriteString(nixbase32.EncodeToString(nar.fileHash[:]))
	b.WriteString("\nFileSize: ")
	b.WriteString(strconv.FormatInt(nar.FileSize, 10))
	// The NAR hash is of the uncompressed archive, which does not exist:
	// derive a stable fake one.
	nh := sha256.Sum256(append([]byte("nar"), nar.fileHash[:]...))
	b.WriteString("\nNarHash: sha256:")
	b.WriteString(nixbase32.EncodeToString(nh[:]))
	b.WriteString("\nNarSize: ")
	b.WriteString(strconv.FormatInt(nar.NarSize, 10))
	// As Nix writes it: "References: " even when there are none.
	b.WriteString("\nReferences: ")
	for j, r := range p.Refs {
		if j > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.BaseName(int(r)))
	}
	if p.Kind != Drv {
		b.WriteString("\nDeriver: ")
		b.WriteString(c.DrvBaseName(i))
	}
	sig := sha256.Sum256(append([]byte("sig"), p.hash[:]...))
	sig2 := sha256.Sum256(sig[:])
	b.WriteString("\nSig: cache.example.org-1:")
	b.WriteString(base64.StdEncoding.EncodeToString(append(sig[:], sig2[:]...)))
	b.WriteString("\n")
	return []byte(b.String())
}

// Ls renders path i's listing.
func (c *Cache) Ls(i int) []byte {
	return []byte(`{"version":1,"root":{"type":"regular","size":` + strconv.FormatInt(c.NARs[c.Paths[i].NAR].NarSize, 10) + `,"narOffset":96}}` + "\n")
}

// Log renders path i's build log.
func (c *Cache) Log(i int) []byte {
	return []byte("building '/nix/store/" + c.DrvBaseName(i) + "'...\nunpacking sources\nconfiguring\nbuilding\ninstalling\n")
}

// NixCacheInfo is the cache's nix-cache-info file.
const NixCacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
