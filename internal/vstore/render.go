package vstore

import (
	"encoding/base64"
	"strconv"
)

const storeDir = "/nix/store/"

// CacheInfo is the body of nix-cache-info.
const CacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"

// appendSlotBase appends narinfo slot s's base name "<hash>-<name>".
func (g *gen) appendSlotBase(b []byte, s uint64) []byte {
	var h [32]byte
	g.niHash(h[:], s)
	b = append(b, h[:]...)
	b = append(b, '-')
	b = g.appendName(b, s>>1)
	if s&1 == 1 {
		b = append(b, ".drv"...)
	}
	return b
}

func (g *gen) slotBaseLen(s uint64) int {
	n := 33 + g.nameLen(s>>1)
	if s&1 == 1 {
		n += 4
	}
	return n
}

// refSlots appends narinfo slot s's references as narinfo slots: an
// output's references, or for a .drv the .drv narinfos of its output's
// references that have one.
func (g *gen) refSlots(s uint64, scratch, out []uint64) ([]uint64, []uint64) {
	o := s >> 1
	scratch = g.refs(o, scratch)
	out = out[:0]
	for _, r := range scratch {
		switch {
		case s&1 == 0:
			out = append(out, 2*r)
		case r != o && g.hasDrv(r):
			out = append(out, 2*r+1)
		}
	}
	return scratch, out
}

func appendNARKey(b []byte, g *gen, n uint64) []byte {
	var h [52]byte
	g.narHash(h[:], n)
	b = append(b, "nar/"...)
	b = append(b, h[:]...)
	return append(b, ".nar.zst"...)
}

const narKeyLen = 4 + 52 + 8

// narinfo renders narinfo slot s.
func (g *gen) narinfo(b []byte, s uint64, scratch, refs []uint64) ([]byte, []uint64, []uint64) {
	n := g.narOf(s)
	b = append(b, "StorePath: "+storeDir...)
	b = g.appendSlotBase(b, s)
	b = append(b, "\nURL: "...)
	b = appendNARKey(b, g, n)
	b = append(b, "\nCompression: zstd\nFileHash: sha256:"...)
	var h [52]byte
	g.narHash(h[:], n)
	b = append(b, h[:]...)
	b = append(b, "\nFileSize: "...)
	b = strconv.AppendUint(b, g.fileSize(n), 10)
	b = append(b, "\nNarHash: sha256:"...)
	putDigits(h[:12], g.rnd(tagNarHash, n), 12)
	putDigits(h[12:24], g.rnd(tagNarHash, n+1<<62), 12)
	putDigits(h[24:36], g.rnd(tagNarHash, n+2<<62), 12)
	putDigits(h[36:52], g.rnd(tagNarHash, n+3<<62), 16)
	b = append(b, h[:]...)
	b = append(b, "\nNarSize: "...)
	b = strconv.AppendUint(b, g.narSize(n), 10)
	b = append(b, "\nReferences:"...)
	scratch, refs = g.refSlots(s, scratch, refs)
	for _, r := range refs {
		b = append(b, ' ')
		b = g.appendSlotBase(b, r)
	}
	if s&1 == 0 {
		b = append(b, "\nDeriver: "...)
		b = g.appendSlotBase(b, s|1)
	}
	b = append(b, "\nSig: cache.example.org-1:"...)
	var sig [64]byte
	for i := range 8 {
		v := g.rnd(tagSig, s<<3|uint64(i))
		for j := range 8 {
			sig[8*i+j] = byte(v >> (8 * j))
		}
	}
	b = base64.StdEncoding.AppendEncode(b, sig[:])
	return append(b, '\n'), scratch, refs
}

// narinfoLen is len(narinfo(s)) without rendering it (listings need every
// narinfo's size).
func (g *gen) narinfoLen(s uint64, scratch, refs []uint64) (int, []uint64, []uint64) {
	n := g.narOf(s)
	l := len("StorePath: "+storeDir) + g.slotBaseLen(s) +
		len("\nURL: ") + narKeyLen +
		len("\nCompression: zstd\nFileHash: sha256:") + 52 +
		len("\nFileSize: ") + digits(g.fileSize(n)) +
		len("\nNarHash: sha256:") + 52 +
		len("\nNarSize: ") + digits(g.narSize(n)) +
		len("\nReferences:")
	scratch, refs = g.refSlots(s, scratch, refs)
	for _, r := range refs {
		l += 1 + g.slotBaseLen(r)
	}
	if s&1 == 0 {
		l += len("\nDeriver: ") + g.slotBaseLen(s|1)
	}
	l += len("\nSig: cache.example.org-1:") + base64.StdEncoding.EncodedLen(64) + 1
	return l, scratch, refs
}

// ls renders narinfo slot s's .ls.
func (g *gen) ls(b []byte, s uint64) []byte {
	b = append(b, `{"version":1,"root":{"type":"regular","size":`...)
	b = strconv.AppendUint(b, g.narSize(g.narOf(s)), 10)
	return append(b, ",\"narOffset\":96}}\n"...)
}

func (g *gen) lsLen(s uint64) int {
	return len(`{"version":1,"root":{"type":"regular","size":`) + digits(g.narSize(g.narOf(s))) + len(",\"narOffset\":96}}\n")
}

// logKey appends output o's log key "log/<drv base name>".
func (g *gen) logKey(b []byte, o uint64) []byte {
	return g.appendSlotBase(append(b, "log/"...), 2*o+1)
}

func (g *gen) logBody(b []byte, o uint64) []byte {
	b = append(b, "building '"+storeDir...)
	b = g.appendSlotBase(b, 2*o+1)
	return append(b, "'...\nunpacking sources\nconfiguring\nbuilding\ninstalling\n"...)
}

func (g *gen) logLen(o uint64) int {
	return len("building '"+storeDir) + g.slotBaseLen(2*o+1) + len("'...\nunpacking sources\nconfiguring\nbuilding\ninstalling\n")
}

// markerKey is root r's marker key.
func markerKey(r int) string {
	b := []byte("gcroots/host-")
	if r < 10 {
		b = append(b, '0')
	}
	return string(strconv.AppendInt(b, int64(r), 10))
}

func (g *gen) marker(r uint64) []byte {
	b := append([]byte(nil), storeDir...)
	b = g.appendSlotBase(b, 2*r)
	return append(b, '\n')
}

// appendETag appends a quoted 16-hex-digit ETag.
func appendETag(b []byte, v uint64) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 15; i >= 0; i-- {
		b = append(b, hex[(v>>(4*i))&15])
	}
	return append(b, '"')
}
