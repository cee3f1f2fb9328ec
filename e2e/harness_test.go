// Package e2e holds end-to-end tests: the real Nix 2.8 client, nginx, an
// S3 server (versitygw) and the kiss binary, all started by the tests on
// 127.0.0.1 through internal/testenv.
package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// objSum is what two copies of an object must agree on.
type objSum struct {
	Size   int64
	SHA256 string
}

// snapshot maps key → objSum.
type snapshot map[string]objSum

// e2eCtx is a context bounded so a hung component fails the test instead
// of the whole suite.
func e2eCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a storage URL and closes it at the end of the test.
func openStore(t testing.TB, url string) storage.Store {
	t.Helper()
	st, err := storage.Open(e2eCtx(t), url)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// ignoredKey says which keys snapshots leave out: kiss's own bookkeeping
// (.kiss/: memo, driver temp files) and lock leases, which legitimately
// differ between runs and stores.
func ignoredKey(key string) bool {
	return strings.HasPrefix(key, ".kiss/") || strings.HasPrefix(key, "gcroots/.lock/")
}

// snapshotStore reads every object through the storage API and hashes it.
func snapshotStore(t testing.TB, st storage.Store) snapshot {
	t.Helper()
	ctx := e2eCtx(t)
	snap := snapshot{}
	for obj, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatalf("list %s: %v", st.URL(), err)
		}
		if ignoredKey(obj.Key) {
			continue
		}
		r, err := st.Get(ctx, obj.Key)
		if err != nil {
			t.Fatalf("get %s: %v", obj.Key, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, r)
		r.Close()
		if err != nil {
			t.Fatalf("read %s: %v", obj.Key, err)
		}
		if n != obj.Size {
			t.Errorf("%s: listed size %d, read %d bytes", obj.Key, obj.Size, n)
		}
		if _, dup := snap[obj.Key]; dup {
			t.Errorf("%s listed twice", obj.Key)
		}
		snap[obj.Key] = objSum{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	return snap
}

// snapshotDir hashes every regular file under dir straight from the
// filesystem: the ground truth the storage layer is compared against.
func snapshotDir(t testing.TB, dir string) snapshot {
	t.Helper()
	snap := snapshot{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		key := filepath.ToSlash(rel)
		if ignoredKey(key) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		snap[key] = objSum{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return snap
}

// diffSnapshots lists every difference between two snapshots, sorted.
func diffSnapshots(a, b snapshot, aName, bName string) []string {
	var d []string
	for k, va := range a {
		vb, ok := b[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s: only in %s", k, aName))
		case va != vb:
			d = append(d, fmt.Sprintf("%s: %s has %d bytes %s…, %s has %d bytes %s…", k, aName, va.Size, va.SHA256[:12], bName, vb.Size, vb.SHA256[:12]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only in %s", k, bName))
		}
	}
	sort.Strings(d)
	return d
}

func (s snapshot) keys() []string {
	ks := make([]string, 0, len(s))
	for k := range s {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// copyStore copies every object of src into dst through the storage API
// (create-if-absent, so nothing in dst is overwritten) and returns how
// many objects it copied.
func copyStore(t testing.TB, src, dst storage.Store) int {
	t.Helper()
	ctx := e2eCtx(t)
	n := 0
	for obj, err := range src.List(ctx, "") {
		if err != nil {
			t.Fatalf("list %s: %v", src.URL(), err)
		}
		if ignoredKey(obj.Key) {
			continue
		}
		r, err := src.Get(ctx, obj.Key)
		if err != nil {
			t.Fatalf("get %s: %v", obj.Key, err)
		}
		_, err = dst.Put(ctx, obj.Key, r, storage.PutOptions{IfNotExist: true, ContentType: nixcache.ContentType(obj.Key)})
		r.Close()
		if err != nil {
			t.Fatalf("put %s into %s: %v", obj.Key, dst.URL(), err)
		}
		n++
	}
	return n
}

// nixCache is a binary cache written by the real `nix copy --to file://`.
type nixCache struct {
	Nix       *testenv.NixEnv
	Dir       string            // the flat cache directory
	SecretKey string            // file
	PublicKey string            // "name:base64"
	Out       map[string]string // attribute → output store path
	Drv       map[string]string // attribute → its .drv
}

// URL is the plain file:// URL of the cache (for reading and for kiss).
func (c *nixCache) URL() string { return "file://" + c.Dir }

// PushURL is the URL nix copy writes with: zstd NARs, .ls listings,
// signatures.
func (c *nixCache) PushURL() string {
	return "file://" + c.Dir + "?compression=zstd&write-nar-listing=true&secret-key=" + c.SecretKey
}

// buildAndPush builds expr (an attribute set of derivations, testenv's
// Prelude in scope), then pushes the outputs of push (all attributes when
// empty) signed, each one's .drv with `nix copy --derivation`, and each
// one's build log with `nix store copy-log`, so the cache has every kind
// of object Nix writes.
func buildAndPush(t testing.TB, n *testenv.NixEnv, expr string, push ...string) *nixCache {
	t.Helper()
	c := &nixCache{Nix: n, Dir: t.TempDir()}
	c.SecretKey, c.PublicKey = n.GenerateKey("kiss-e2e-" + n.Nonce[:6])
	c.Out = n.BuildAttrs(expr)
	c.Drv = map[string]string{}
	if len(push) == 0 {
		for a := range c.Out {
			push = append(push, a)
		}
		sort.Strings(push)
	}
	var outs, drvs []string
	for _, a := range push {
		p, ok := c.Out[a]
		if !ok {
			t.Fatalf("no attribute %q", a)
		}
		c.Drv[a] = n.Deriver(p)
		outs = append(outs, p)
		drvs = append(drvs, c.Drv[a])
	}
	if err := n.CopyTo(c.PushURL(), outs...); err != nil {
		t.Fatal(err)
	}
	if err := n.CopyDerivationTo(c.PushURL(), drvs...); err != nil {
		t.Fatal(err)
	}
	if err := n.CopyLogTo(c.URL(), drvs...); err != nil {
		t.Fatal(err)
	}
	return c
}

// dagExpr is the closure graph the e2e tests push: shared dependencies
// (lib under util under app), two roots, unrooted garbage that shares a
// dependency with a root, and two byte-identical outputs (dupKept, used by
// a root, and dupGarbage, unrooted) whose narinfos point at one NAR.
const dagExpr = `rec {
  lib = mk "e2e-lib" "echo building lib; mkdir $out; echo lib-${nonce} > $out/lib.txt; i=0; while [ $i -lt 300 ]; do echo line $i of lib; i=$((i+1)); done > $out/big.txt";
  util = mk "e2e-util" "echo building util; mkdir $out; echo ${lib} > $out/uses-lib";
  dupKept = mk "e2e-dup-kept" "echo building dup; echo identical-content > $out";
  dupGarbage = mk "e2e-dup-garbage" "echo building dup; echo identical-content > $out";
  app = mk "e2e-app" "echo building app; mkdir $out; echo ${util} ${dupKept} > $out/deps";
  data = mk "e2e-data" "echo building data; echo data-${nonce} > $out";
  tool = mk "e2e-tool" "echo building tool; mkdir $out; ln -s ${data} $out/data";
  garbageDep = mk "e2e-garbage-dep" "echo building garbage-dep; echo gd-${nonce} > $out";
  garbage = mk "e2e-garbage" "echo building garbage; mkdir $out; echo ${lib} ${garbageDep} ${dupGarbage} > $out/deps";
}`

// dagRoots and dagUnrooted are dagExpr's top-level attributes by fate.
var (
	dagRoots    = []string{"app", "tool"}
	dagUnrooted = []string{"garbage"}
)

func putIfAbsent() storage.PutOptions { return storage.PutOptions{IfNotExist: true} }

// waitStoreClockPast waits (at most 15 s) until the store's clock is two
// seconds past the newest object's ModTime. An S3 store's clock comes from
// the Date header: whole seconds, and versitygw (fasthttp) refreshes it
// only once a second, so it can lag the objects' exact mtimes by up to
// ~2 s (seen: store clock 02:23:07 at local 02:23:08.5). An object written
// a moment ago then looks younger than "now" even with --grace 0s, and the
// pruner rightly keeps it (invariant I3); tests that expect a grace-0
// prune to delete fresh objects must let the store clock pass them first.
// Each Now estimate carries its own error, hence the margin.
func waitStoreClockPast(t testing.TB, st storage.Store) {
	t.Helper()
	ctx := e2eCtx(t)
	var newest time.Time
	for obj, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatalf("list %s: %v", st.URL(), err)
		}
		if obj.ModTime.After(newest) {
			newest = obj.ModTime
		}
	}
	newest = newest.Add(2 * time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := st.Now(ctx)
		if err != nil {
			t.Fatalf("store clock of %s: %v", st.URL(), err)
		}
		if now.After(newest) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store clock %v never passed the newest object %v", now, newest)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// backends are the stores every cross-backend e2e test runs on.
var backends = []string{"file", "s3"}

// backendStore returns a fresh, empty store URL of the given backend: a temp
// directory, or a new bucket on the test's versitygw.
func backendStore(t *testing.T, backend string) string {
	t.Helper()
	// Every scenario on a backend runs the kiss binary, some of them from
	// goroutines, where a skip cannot happen: skip here, up front.
	testenv.SkipShort(t, "an end-to-end scenario with the kiss binary")
	if backend == "s3" {
		return testenv.Versitygw(t)
	}
	return "file://" + t.TempDir()
}
