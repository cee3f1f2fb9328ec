package gc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// fakeClock is the store's clock, far from the test host's (I6).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// cache builds a synthetic binary cache in a store.
type cache struct {
	t     testing.TB
	st    storage.Store
	clock *fakeClock
	paths map[string]*path
}

type path struct {
	name   string
	hash   nixcache.Hash
	narKey string
	refs   []*path
	deriv  *path
}

func (p *path) base() string    { return p.hash.String() + "-" + p.name }
func (p *path) abs() string     { return "/nix/store/" + p.base() }
func (p *path) narinfo() string { return nixcache.NarInfoKey(p.hash) }

func newMemCache(t testing.TB) *cache {
	clock := &fakeClock{t: time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)}
	return &cache{t: t, st: storage.NewMem(clock.now), clock: clock, paths: map[string]*path{}}
}

// keysOnlyLocal is a mem store that lists like file:// does: keys without
// attributes (storage.KeyLister), on a "local" store, so the plan takes the
// list-then-walk path and stats only what it may delete.
type keysOnlyLocal struct{ storage.Store }

func (k keysOnlyLocal) ListKeys(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		for o, err := range k.Store.List(ctx, prefix) {
			if !yield(storage.Object{Key: o.Key}, err) {
				return
			}
		}
	}
}

func (k keysOnlyLocal) Capabilities() storage.Capabilities {
	c := k.Store.Capabilities()
	c.Local = true
	return c
}

func newKeysOnlyMemCache(t testing.TB) *cache {
	c := newMemCache(t)
	c.st = keysOnlyLocal{c.st}
	return c
}

// memVariants runs a test on the mem store as listed with attributes (the
// overlapping cold walk of a remote store) and keys-only (file://'s path,
// with the fake clock): test bodies call the newMemCache they are given.
func memVariants(t *testing.T, test func(t *testing.T, newMemCache func(testing.TB) *cache)) {
	t.Run("listed", func(t *testing.T) { test(t, newMemCache) })
	t.Run("keys-only", func(t *testing.T) { test(t, newKeysOnlyMemCache) })
}

func newFileCache(t testing.TB) *cache {
	st, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &cache{t: t, st: st, clock: nil, paths: map[string]*path{}}
}

// newS3Cache is a cache in a fresh bucket of a real S3 server (versitygw,
// started by internal/testenv on 127.0.0.1); its clock is the server's.
func newS3Cache(t testing.TB) *cache {
	st, err := storage.Open(context.Background(), testenv.Versitygw(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &cache{t: t, st: st, paths: map[string]*path{}}
}

func digest(s string) nixcache.Hash {
	sum := sha256.Sum256([]byte(s))
	var h nixcache.Hash
	copy(h[:], sum[:])
	// Round-trip through the string form so the hash is canonical.
	h2, err := nixcache.ParseHash(h.String())
	if err != nil {
		panic(err)
	}
	return h2
}

func (c *cache) put(key string, body []byte) {
	c.t.Helper()
	if _, err := c.st.Put(context.Background(), key, bytes.NewReader(body), storage.PutOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cache) exists(key string) bool {
	_, err := c.st.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.t.Fatal(err)
	}
	return err == nil
}

// add uploads a path as Nix does: NAR first, then narinfo.
func (c *cache) add(name string, refs ...*path) *path {
	c.t.Helper()
	p := &path{name: name, hash: digest("path:" + name), refs: refs}
	p.narKey = "nar/" + digest("nar:"+name).String() + digest("nar2:" + name).String()[:20] + ".nar.zst"
	c.put(p.narKey, []byte("NAR of "+name))
	c.putNarInfo(p, "")
	c.paths[name] = p
	return p
}

func (c *cache) putNarInfo(p *path, extra string) {
	var refs []string
	for _, r := range p.refs {
		refs = append(refs, r.base())
	}
	der := "unknown-deriver"
	if p.deriv != nil {
		der = p.deriv.base()
	}
	body := fmt.Sprintf("StorePath: %s\nURL: %s\nCompression: zstd\nFileSize: %d\nNarHash: sha256:0gxb81r7gprh2asvkw2ah5g9vmk4jhyz93lfx89wyr2srqay8m3b\nNarSize: 576\nReferences: %s\nDeriver: %s\n%s",
		p.abs(), p.narKey, len("NAR of "+p.name), strings.Join(refs, " "), der, extra)
	c.put(p.narinfo(), []byte(body))
}

func (c *cache) root(name string, ps ...*path) {
	c.t.Helper()
	var s []string
	for _, p := range ps {
		s = append(s, p.abs())
	}
	c.put("gcroots/"+name, nixcache.FormatMarker(s))
}

// settle waits (bounded) until the store's clock is past every object's
// mtime, so a grace-0 prune sees them as old. Only real-clock stores need
// it: an S3 Date header has 1 s resolution and may lag LastModified.
func (c *cache) settle() {
	c.t.Helper()
	if c.clock != nil {
		return
	}
	var newest time.Time
	for o, err := range c.st.List(context.Background(), "") {
		if err != nil {
			c.t.Fatal(err)
		}
		if o.ModTime.After(newest) {
			newest = o.ModTime
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := c.st.Now(context.Background())
		if err != nil {
			c.t.Fatal(err)
		}
		if now.After(newest) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("store clock %v never passed %v", now, newest)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cache) age(d time.Duration) {
	if c.clock == nil {
		c.t.Fatal("file cache has the real clock")
	}
	c.clock.advance(d)
}

// present asserts the path's narinfo and NAR exist (want) or are gone.
func (c *cache) present(p *path, want bool) {
	c.t.Helper()
	if got := c.exists(p.narinfo()); got != want {
		c.t.Errorf("%s narinfo present = %v, want %v", p.name, got, want)
	}
	if got := c.exists(p.narKey); got != want {
		c.t.Errorf("%s NAR present = %v, want %v", p.name, got, want)
	}
}

func (c *cache) keys() map[string]bool {
	m := map[string]bool{}
	for o, err := range c.st.List(context.Background(), "") {
		if err != nil {
			c.t.Fatal(err)
		}
		m[o.Key] = true
	}
	return m
}

// countFence always confirms and counts calls.
type countFence struct{ n atomic.Int64 }

func (f *countFence) Confirm(context.Context) error { f.n.Add(1); return nil }

// prune plans and executes with opts; it fails the test on error.
func (c *cache) prune(opts gc.Options) *gc.Report {
	c.t.Helper()
	rep, err := c.tryPrune(opts)
	if err != nil {
		c.t.Fatalf("prune: %v", err)
	}
	return rep
}

func (c *cache) tryPrune(opts gc.Options) (*gc.Report, error) {
	return prune(c.st, opts)
}

func prune(st storage.Store, opts gc.Options) (*gc.Report, error) {
	p, err := gc.NewPlan(context.Background(), st, opts)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Execute(context.Background(), &countFence{}, nil)
}

// spy wraps a store: counts requests, records deletes, injects faults.
type spy struct {
	storage.Store
	mu       sync.Mutex
	gets     map[string]int
	deletes  [][]string
	failGet  func(key string) error
	failList error
	failDel  func(keys []string) error
	// unlisted: keys the listings leave out (written after the listing
	// passed them), which Stat and Get still find.
	unlisted func(key string) bool
	// statGone: keys a Stat calls absent (deleted after they were listed).
	statGone func(key string) bool
}

func (s *spy) Stat(ctx context.Context, key string) (storage.Object, error) {
	if s.statGone != nil && s.statGone(key) {
		return storage.Object{}, fmt.Errorf("spy: %s: %w", key, storage.ErrNotFound)
	}
	return s.Store.Stat(ctx, key)
}

func newSpy(st storage.Store) *spy { return &spy{Store: st, gets: map[string]int{}} }

func (s *spy) Get(ctx context.Context, key string) (storage.Reader, error) {
	s.mu.Lock()
	s.gets[key]++
	f := s.failGet
	s.mu.Unlock()
	if f != nil {
		if err := f(key); err != nil {
			return nil, err
		}
	}
	return s.Store.Get(ctx, key)
}

func (s *spy) narinfoGets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.gets {
		if strings.HasSuffix(k, ".narinfo") {
			n += v
		}
	}
	return n
}

func (s *spy) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return s.list(s.Store.List(ctx, prefix))
}

// ListKeys passes a keys-only listing through (storage.KeyLister).
func (s *spy) ListKeys(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return s.list(storage.ListKeys(ctx, s.Store, prefix))
}

func (s *spy) list(inner iter.Seq2[storage.Object, error]) iter.Seq2[storage.Object, error] {
	if s.unlisted != nil {
		all := inner
		inner = func(yield func(storage.Object, error) bool) {
			for o, err := range all {
				if err == nil && s.unlisted(o.Key) {
					continue
				}
				if !yield(o, err) {
					return
				}
			}
		}
	}
	if s.failList != nil {
		return func(yield func(storage.Object, error) bool) {
			n := 0
			for o, err := range inner {
				if n++; n > 3 {
					yield(storage.Object{}, s.failList)
					return
				}
				if !yield(o, err) {
					return
				}
			}
			yield(storage.Object{}, s.failList)
		}
	}
	return inner
}

func (s *spy) DeleteMany(ctx context.Context, keys []string) error {
	s.mu.Lock()
	s.deletes = append(s.deletes, append([]string(nil), keys...))
	f := s.failDel
	s.mu.Unlock()
	if f != nil {
		if err := f(keys); err != nil {
			return err
		}
	}
	return s.Store.DeleteMany(ctx, keys)
}

var _ io.Reader = (*bytes.Reader)(nil)
