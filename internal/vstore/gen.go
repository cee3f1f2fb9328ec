package vstore

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"time"

	"github.com/kiss-cache/kiss/internal/synth"
)

// Config describes the virtual cache. Zero fields take the documented
// defaults.
type Config struct {
	// Paths is about how many narinfos the cache holds (outputs plus the
	// .drv narinfos of DrvFraction of them). Required.
	Paths int64
	// Seed makes another cache of the same shape.
	Seed uint64
	// Roots is the number of markers gcroots/host-NN (default 8).
	Roots int
	// GarbageFraction of the outputs is unreachable (default 0.5).
	GarbageFraction float64
	// RefsPerPath is the mean number of references of an output (default 10).
	RefsPerPath float64
	// Fanout of the forest that makes every live path reachable (default 6).
	Fanout int
	// DrvFraction of outputs have their .drv narinfo in the cache (default 0.1).
	DrvFraction float64
	// LsFraction of narinfos have a .ls (default 0.1).
	LsFraction float64
	// LogFraction of outputs have a build log (default 0.05).
	LogFraction float64
	// SharedNARFraction of the garbage shares the NAR of an older path (default 0.01).
	SharedNARFraction float64
	// OrphanNARFraction: orphan NARs, as a share of the outputs (default 0.01).
	OrphanNARFraction float64
	// NewbornFraction of the garbage outputs are newborns (default 0.002).
	NewbornFraction float64
	// Now is the store's clock at creation (default time.Now()).
	Now time.Time
	// Age: old objects have mtimes in [Now-2·Age, Now-Age] (default 30 days);
	// newborns are at most ten minutes old, markers one day.
	Age time.Duration
	// Latency, if set, is slept in every request.
	Latency Latency
	// StateDir, if set, keeps the overlay (objects written with Put) and the
	// deletions there, so another process sees them (New loads them; Close
	// saves the deletions). Overlay bodies are files there, not memory.
	StateDir string
}

// Latency is the time a request takes, by S3 operation.
type Latency struct {
	Get, Head, Put, Delete, ListPage, DeleteBatch time.Duration
}

func (c Config) withDefaults() Config {
	def := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Roots == 0 {
		c.Roots = 8
	}
	if c.Fanout == 0 {
		c.Fanout = 6
	}
	def(&c.GarbageFraction, 0.5)
	def(&c.RefsPerPath, 10)
	def(&c.DrvFraction, 0.1)
	def(&c.LsFraction, 0.1)
	def(&c.LogFraction, 0.05)
	def(&c.SharedNARFraction, 0.01)
	def(&c.OrphanNARFraction, 0.01)
	def(&c.NewbornFraction, 0.002)
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if c.Age == 0 {
		c.Age = 30 * 24 * time.Hour
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	frac := func(name string, v, most float64) {
		if v < 0 || v > most || math.IsNaN(v) {
			errs = append(errs, fmt.Errorf("%s = %v: want 0..%v", name, v, most))
		}
	}
	if c.Paths < int64(64*c.Roots) {
		errs = append(errs, fmt.Errorf("paths = %d: want at least 64 per root", c.Paths))
	}
	if c.Paths > 1<<34 {
		errs = append(errs, fmt.Errorf("paths = %d: at most 2^34", c.Paths))
	}
	if c.Roots < 1 || c.Roots > 99 {
		errs = append(errs, fmt.Errorf("roots = %d: want 1..99", c.Roots))
	}
	if c.Fanout < 2 || c.Fanout > 64 {
		errs = append(errs, fmt.Errorf("fanout = %d: want 2..64", c.Fanout))
	}
	frac("garbage fraction", c.GarbageFraction, 0.9)
	frac("drv fraction", c.DrvFraction, 1)
	frac("ls fraction", c.LsFraction, 1)
	frac("log fraction", c.LogFraction, 1)
	frac("shared NAR fraction", c.SharedNARFraction, 1)
	frac("orphan NAR fraction", c.OrphanNARFraction, 1)
	frac("newborn fraction", c.NewbornFraction, 1)
	if c.RefsPerPath < 1.5 || c.RefsPerPath > 100 {
		errs = append(errs, fmt.Errorf("refs per path = %v: want 1.5..100", c.RefsPerPath))
	}
	return errors.Join(errs...)
}

// gen holds the derived parameters; every method is a pure function.
type gen struct {
	seed uint64
	// Outputs: [0,roots) systems, [0,live) live, [live,outputs) garbage,
	// [outputs-newborn,outputs) newborn.
	outputs, live, roots, newborn uint64
	fanout, window                uint64
	meanRefs                      float64
	drvP, lsP, logP, shareP       uint64 // probabilities as thresholds on a uniform uint64
	// Narinfo slots: 2o is output o, 2o+1 its .drv (present if hasDrv).
	niSlots uint64
	// NAR slots: n < niSlots belongs to narinfo slot n, the rest are orphans.
	narSlots            uint64
	niPerm, narPerm     feistel
	niSpacing, narSpace uint64
	now                 time.Time
	age                 time.Duration
}

func newGen(c Config) *gen {
	outputs := uint64(math.Round(float64(c.Paths) / (1 + c.DrvFraction)))
	garbage := uint64(float64(outputs) * c.GarbageFraction)
	g := &gen{
		seed:     c.Seed,
		outputs:  outputs,
		live:     outputs - garbage,
		roots:    uint64(c.Roots),
		newborn:  uint64(math.Ceil(float64(garbage) * c.NewbornFraction)),
		fanout:   uint64(c.Fanout),
		meanRefs: c.RefsPerPath - 1.3, // a tree edge and a self-reference in 3 come on top
		drvP:     prob(c.DrvFraction),
		lsP:      prob(c.LsFraction),
		logP:     prob(c.LogFraction),
		shareP:   prob(c.SharedNARFraction),
		now:      c.Now,
		age:      c.Age,
	}
	if c.NewbornFraction == 0 {
		g.newborn = 0
	}
	g.window = max(64, g.live/30)
	g.niSlots = 2 * outputs
	g.narSlots = g.niSlots + uint64(float64(outputs)*c.OrphanNARFraction)
	g.niPerm = newFeistel(g.niSlots, c.Seed^0x6e69)
	g.narPerm = newFeistel(g.narSlots, c.Seed^0x6e6172)
	g.niSpacing = (1 << 60) / g.niSlots
	g.narSpace = (1 << 61) / g.narSlots
	return g
}

func prob(p float64) uint64 {
	if p >= 1 {
		return math.MaxUint64
	}
	return uint64(p * (1 << 63) * 2)
}

// Random numbers: a counter-based generator (splitmix64), so any object's
// draws are computed without generating the ones before it.

func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Tags of independent draws.
const (
	tagDrv = iota + 1
	tagLs
	tagLog
	tagShare
	tagShareTo
	tagRefs
	tagJitter
	tagHash1
	tagHash2
	tagHash3
	tagHash4
	tagName
	tagSize
	tagMtime
	tagEtag
	tagNarHash
	tagSig
)

func (g *gen) rnd(tag, i uint64) uint64 {
	return mix(g.seed*0x9e3779b97f4a7c15 + tag*0xd1b54a32d192ed03 + i*0x8cb92ba72f3d8dd7 + 0x632be59bd9b4e019)
}

type rng struct{ s uint64 }

func (g *gen) rng(tag, i uint64) rng { return rng{g.rnd(tag, i)} }
func (r *rng) next() uint64          { r.s += 0x9e3779b97f4a7c15; return mix(r.s) }
func (r *rng) float() float64        { return float64(r.next()>>11) / (1 << 53) }
func (r *rng) below(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// feistel is a seeded permutation of [0,n): a balanced four-round Feistel
// network on the smallest even number of bits that holds n, cycle-walking
// the values that fall outside.
type feistel struct {
	n    uint64
	half uint
	mask uint64
	keys [4]uint64
}

func newFeistel(n, seed uint64) feistel {
	b := uint(bits.Len64(n - 1))
	b += b & 1
	if b < 2 {
		b = 2
	}
	f := feistel{n: n, half: b / 2, mask: 1<<(b/2) - 1}
	for i := range f.keys {
		f.keys[i] = mix(seed + uint64(i+1)*0x9e3779b97f4a7c15)
	}
	return f
}

func (f *feistel) round(x uint64, k int) uint64 { return mix(x^f.keys[k]) & f.mask }

func (f *feistel) fwd(x uint64) uint64 {
	for {
		l, r := x>>f.half, x&f.mask
		for k := range 4 {
			l, r = r, l^f.round(r, k)
		}
		x = l<<f.half | r
		if x < f.n {
			return x
		}
	}
}

func (f *feistel) inv(x uint64) uint64 {
	for {
		l, r := x>>f.half, x&f.mask
		for k := 3; k >= 0; k-- {
			l, r = r^f.round(l, k), l
		}
		x = l<<f.half | r
		if x < f.n {
			return x
		}
	}
}

// Shape.

func (g *gen) isLive(o uint64) bool    { return o < g.live }
func (g *gen) isNewborn(o uint64) bool { return o >= g.outputs-g.newborn }
func (g *gen) hasDrv(o uint64) bool    { return g.rnd(tagDrv, o) < g.drvP }
func (g *gen) hasLog(o uint64) bool    { return g.rnd(tagLog, o) < g.logP }
func (g *gen) hasLs(s uint64) bool     { return g.rnd(tagLs, s) < g.lsP }

// kept: a prune keeps output o's objects (it is reachable, or a newborn).
func (g *gen) kept(o uint64) bool { return g.isLive(o) || g.isNewborn(o) }

// niExists: narinfo slot s is in the cache.
func (g *gen) niExists(s uint64) bool {
	return s < g.niSlots && (s&1 == 0 || g.hasDrv(s>>1))
}

// sharer: garbage output o names an older path's NAR instead of its own.
func (g *gen) sharer(o uint64) bool {
	return o >= g.live && o > 0 && !g.isNewborn(o) && g.rnd(tagShare, o) < g.shareP
}

// narOf is the NAR slot narinfo slot s names.
func (g *gen) narOf(s uint64) uint64 {
	if s&1 == 1 {
		return s
	}
	o := s >> 1
	for g.sharer(o) {
		o = g.rnd(tagShareTo, o) % o
	}
	return 2 * o
}

// narExists: NAR slot n is in the cache.
func (g *gen) narExists(n uint64) bool {
	if n >= g.niSlots {
		return n < g.narSlots
	}
	return g.niExists(n) && (n&1 == 1 || !g.sharer(n>>1))
}

// narKept: NAR slot n survives a prune (its owner is kept; sharers never are).
func (g *gen) narKept(n uint64) bool { return n < g.niSlots && g.kept(n>>1) }

func (g *gen) refCount(r *rng) int {
	if g.meanRefs <= 0 {
		return 0
	}
	k := int(-g.meanRefs * math.Log(1-r.float()))
	return min(k, 8*int(g.meanRefs)+8)
}

// refs appends output o's references (output indices, sorted, unique).
func (g *gen) refs(o uint64, out []uint64) []uint64 {
	out = out[:0]
	r := g.rng(tagRefs, o)
	popularLive := func() uint64 {
		u := r.float()
		return g.live - 1 - uint64(float64(g.live-1-g.roots)*u*u*u)
	}
	k := g.refCount(&r)
	switch {
	case g.isLive(o):
		for c := g.roots + o*g.fanout; c < g.roots+(o+1)*g.fanout && c < g.live; c++ {
			out = append(out, c)
		}
		for range k {
			if o+1 >= g.live {
				break
			}
			if r.next()&1 == 0 {
				if c := o + 1 + r.below(g.window); c < g.live {
					out = append(out, c)
				}
			} else {
				u := r.float()
				out = append(out, g.live-1-uint64(float64(g.live-2-o)*u*u*u))
			}
		}
	case g.isNewborn(o):
		for range k {
			out = append(out, popularLive())
		}
	default:
		end := g.outputs - g.newborn
		for range k {
			if r.next()&1 == 0 {
				out = append(out, popularLive())
			} else if c := o + 1 + r.below(g.window); c < end {
				out = append(out, c)
			}
		}
	}
	if r.float() < 0.3 {
		out = append(out, o)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Names.

var (
	pnames    = synth.PackageNames
	outSuffix = synth.OutputSuffixes
)

// appendName appends output o's name (the part after "<hash>-").
func (g *gen) appendName(b []byte, o uint64) []byte {
	if o < g.roots {
		b = append(b, "nixos-system-host-"...)
		if o < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendUint(b, o, 10)
		return append(b, "-24.11"...)
	}
	x := g.rnd(tagName, o)
	b = append(b, pnames[x%uint64(len(pnames))]...)
	b = append(b, '-')
	b = strconv.AppendUint(b, 1+(x>>8)%20, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, (x>>16)%40, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, (x>>24)%12, 10)
	return append(b, outSuffix[(x>>32)%uint64(len(outSuffix))]...)
}

func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// nameLen is len(appendName(nil, o)) without building it.
func (g *gen) nameLen(o uint64) int {
	if o < g.roots {
		return len("nixos-system-host-") + max(2, digits(o)) + len("-24.11")
	}
	x := g.rnd(tagName, o)
	return len(pnames[x%uint64(len(pnames))]) + 3 + digits(1+(x>>8)%20) + digits((x>>16)%40) + digits((x>>24)%12) +
		len(outSuffix[(x>>32)%uint64(len(outSuffix))])
}

// Hashes. Nix base32 digits, most significant first.

const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

var digitOf = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

func putDigits(b []byte, v uint64, n int) {
	for i := n - 1; i >= 0; i-- {
		b[i] = alphabet[v&31]
		v >>= 5
	}
}

// niHash writes narinfo slot s's 32-character hash: 12 digits of its rank's
// position (rank order is key order), 20 pseudo-random ones.
func (g *gen) niHash(b []byte, s uint64) {
	rank := g.niPerm.fwd(s)
	pos := rank*g.niSpacing + g.rnd(tagJitter, s)%g.niSpacing
	putDigits(b[:12], pos, 12)
	putDigits(b[12:24], g.rnd(tagHash1, s), 12)
	putDigits(b[24:32], g.rnd(tagHash2, s), 8)
}

// niHashOfRank is niHash for the slot at a rank, and the slot.
func (g *gen) niSlotOfRank(rank uint64) uint64 { return g.niPerm.inv(rank) }

// niSlotOf parses a 32-character hash back to its slot (ok false if no slot
// has that hash).
func (g *gen) niSlotOf(h string) (uint64, bool) {
	return slotOf(h, 32, 12, g.niSpacing, g.niSlots, &g.niPerm, g.niHash)
}

// narHash writes NAR slot n's 52-character file hash: a 0/1 digit and 12
// digits of position (61 bits), 39 pseudo-random ones.
func (g *gen) narHash(b []byte, n uint64) {
	rank := g.narPerm.fwd(n)
	pos := rank*g.narSpace + g.rnd(tagJitter, n|1<<62)%g.narSpace
	putDigits(b[:13], pos, 13)
	putDigits(b[13:25], g.rnd(tagHash1, n|1<<62), 12)
	putDigits(b[25:37], g.rnd(tagHash2, n|1<<62), 12)
	putDigits(b[37:49], g.rnd(tagHash3, n|1<<62), 12)
	putDigits(b[49:52], g.rnd(tagHash4, n|1<<62), 3)
}

func (g *gen) narSlotOf(h string) (uint64, bool) {
	return slotOf(h, 52, 13, g.narSpace, g.narSlots, &g.narPerm, g.narHash)
}

// slotOf maps a hash of size characters, whose first digits encode a
// position (rank·spacing + jitter), back to its slot and checks it: the
// inverse of the hash functions above.
func slotOf(h string, size, digits int, spacing, slots uint64, perm *feistel, render func([]byte, uint64)) (uint64, bool) {
	if len(h) != size {
		return 0, false
	}
	var pos uint64
	for i := range digits {
		d := digitOf[h[i]]
		if d < 0 {
			return 0, false
		}
		pos = pos<<5 | uint64(d)
	}
	rank := pos / spacing
	if rank >= slots {
		return 0, false
	}
	s := perm.inv(rank)
	b := make([]byte, size)
	render(b, s)
	return s, string(b) == h
}

// Sizes and times.

// fileSize is NAR slot n's compressed size: log-normal, median ~160 kB.
func (g *gen) fileSize(n uint64) uint64 {
	r := g.rng(tagSize, n)
	u1, u2 := max(r.float(), 1e-12), r.float()
	z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
	return max(120, uint64(math.Exp(12+2*z)))
}

func (g *gen) narSize(n uint64) uint64 { return g.fileSize(n) * (2 + g.rnd(tagSize, n+1<<63)%3) }

// mtime of an object of output o (key distinguishes its objects): newborn
// objects are up to ten minutes old, the rest older than Age.
func (g *gen) mtime(o, key uint64) time.Time {
	r := g.rnd(tagMtime, key)
	if o < g.outputs && g.isNewborn(o) {
		return g.now.Add(-time.Duration(r % uint64(10*time.Minute)))
	}
	return g.now.Add(-g.age - time.Duration(r%uint64(g.age)))
}
