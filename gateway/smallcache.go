package gateway

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/kiss-cache/kiss/nixcache"
)

// smallCache keeps the bytes of narinfos and .ls listings read from a local
// store. A
// read first stats the key (one fstatat(2) on file://) and is answered from
// memory only if the object still has the ETag it was cached with: on
// file:// that is inode, mtime and size, so a replaced or rewritten file
// is read again. It saves the open, fstat, read and close of every
// narinfo request (about a sixth of a narinfo's time on the benchmark
// machine), never serves a stale or deleted object, and holds at most
// smallCacheEntries objects of at most smallCacheMax bytes.
type smallCache struct {
	lru *lru.Cache[string, cachedObject]
}

// cached reports whether objects of kind k go through the cache.
func cached(k nixcache.Kind) bool { return k == nixcache.KindNarInfo || k == nixcache.KindListing }

// Bounds of the cache: at most 32 MiB.
const (
	smallCacheEntries = 4096
	smallCacheMax     = 8 << 10
)

type cachedObject struct {
	etag string
	body []byte
}

func newSmallCache() *smallCache {
	c, err := lru.New[string, cachedObject](smallCacheEntries)
	if err != nil {
		panic(err) // only for a size ≤ 0
	}
	return &smallCache{lru: c}
}

// get returns key's bytes if they were cached with etag.
func (c *smallCache) get(key, etag string) ([]byte, bool) {
	o, ok := c.lru.Get(key)
	if !ok || o.etag != etag || etag == "" {
		return nil, false
	}
	return o.body, true
}

// add caches a copy of body under key and etag, if it is small enough.
func (c *smallCache) add(key, etag string, body []byte) {
	if etag == "" || len(body) > smallCacheMax {
		return
	}
	c.lru.Add(key, cachedObject{etag: etag, body: append([]byte(nil), body...)})
}
