package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// Opener returns a fresh, empty store for one subtest; cleanup is the
// opener's business (t.Cleanup).
type Opener func(t *testing.T) storage.Store

// LargeSize is the size of the streamed object in TestLarge: larger than
// any multipart part and any buffer a driver might be tempted to use.
// KISS_STORAGETEST_LARGE_MB overrides it (upwards, for soak runs).
var LargeSize int64 = 64 << 20

// Run runs the conformance suite. Each subtest opens its own store.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st storage.Store)
	}{
		{"Capabilities", testCapabilities},
		{"PutGetStat", testPutGetStat},
		{"UnsyncedPut", testUnsyncedPut},
		{"Range", testRange},
		{"NotFound", testNotFound},
		{"ZeroLength", testZeroLength},
		{"NixKeys", testNixKeys},
		{"InvalidKeys", testInvalidKeys},
		{"ListPrefixes", testListPrefixes},
		{"DeleteAndList", testDeleteAndList},
		{"DeleteManyLarge", testDeleteManyLarge},
		{"IfNotExist", testIfNotExist},
		{"IfNotExistRace", testIfNotExistRace},
		{"IfMatch", testIfMatch},
		{"IfMatchRace", testIfMatchRace},
		{"DeleteIfMatch", testDeleteIfMatch},
		{"CancelledPut", testCancelledPut},
		{"FailedReaderPut", testFailedReaderPut},
		{"Clock", testClock},
		{"LargeStreamed", testLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := open(t)
			tc.fn(t, st)
		})
	}
}

// testUnsyncedPut: a Put that may defer durability (PutOptions.Unsynced)
// is published like any other, and storage.Sync then succeeds; Sync of an
// absent key fails with ErrNotFound where the store can defer at all.
func testUnsyncedPut(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	body := []byte("deferred durability")
	obj, err := st.Put(ctx, "nar/unsynced.nar", bytes.NewReader(body), storage.PutOptions{Unsynced: true})
	if err != nil || obj.Size != int64(len(body)) {
		t.Fatalf("unsynced Put = %+v, %v", obj, err)
	}
	if got, _ := get(t, st, "nar/unsynced.nar"); !bytes.Equal(got, body) {
		t.Fatalf("unsynced Put read back %q", got)
	}
	if err := storage.Sync(ctx, st, "nar/unsynced.nar"); err != nil {
		t.Fatalf("Sync after an unsynced Put: %v", err)
	}
	if _, ok := storage.As[storage.Syncer](st); ok {
		if err := storage.Sync(ctx, st, "nar/absent.nar"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Sync of an absent key: %v, want ErrNotFound", err)
		}
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, st storage.Store, key string, body []byte) storage.Object {
	t.Helper()
	obj, err := st.Put(ctxFor(t), key, bytes.NewReader(body), storage.PutOptions{})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if obj.Key != key || obj.Size != int64(len(body)) || obj.ETag == "" {
		t.Fatalf("Put(%q) returned %+v, want key, size %d and an ETag", key, obj, len(body))
	}
	return obj
}

func get(t *testing.T, st storage.Store, key string) ([]byte, storage.Object) {
	t.Helper()
	r, err := st.Get(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Get(%q) read: %v", key, err)
	}
	return b, r.Object()
}

// listAll collects a listing and fails on errors and duplicate keys.
func listAll(t *testing.T, st storage.Store, prefix string) map[string]storage.Object {
	t.Helper()
	out := map[string]storage.Object{}
	for obj, err := range st.List(ctxFor(t), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		if _, dup := out[obj.Key]; dup {
			t.Fatalf("List(%q) returned %q twice", prefix, obj.Key)
		}
		if !strings.HasPrefix(obj.Key, prefix) {
			t.Fatalf("List(%q) returned %q, outside the prefix", prefix, obj.Key)
		}
		out[obj.Key] = obj
	}
	return out
}

func keysOf(m map[string]storage.Object) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// visible lists the whole store minus driver scratch space (.kiss/).
func visible(t *testing.T, st storage.Store) []string {
	t.Helper()
	var ks []string
	for _, k := range keysOf(listAll(t, st, "")) {
		if !strings.HasPrefix(k, ".kiss/") {
			ks = append(ks, k)
		}
	}
	return ks
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
	var se *storage.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s: error %v is not a *storage.Error", what, err)
	}
}

func testCapabilities(t *testing.T, st storage.Store) {
	c := st.Capabilities()
	if !c.AtomicCreate || !c.CompareAndSwap {
		t.Fatalf("Capabilities = %+v: every kiss store must offer AtomicCreate and CompareAndSwap", c)
	}
	if c.MaxBatchDelete < 0 || c.MaxBatchDelete > 1000 {
		t.Fatalf("MaxBatchDelete = %d", c.MaxBatchDelete)
	}
	if st.URL() == "" || strings.Contains(st.URL(), "@") {
		t.Fatalf("URL() = %q: want a non-empty URL without credentials", st.URL())
	}
}

func testPutGetStat(t *testing.T, st storage.Store) {
	body := []byte("StorePath: /nix/store/x\nURL: nar/y.nar.zst\n")
	obj := put(t, st, "abc.narinfo", body)
	got, gobj := get(t, st, "abc.narinfo")
	if !bytes.Equal(got, body) {
		t.Fatalf("Get = %q, want %q", got, body)
	}
	sobj, err := st.Stat(ctxFor(t), "abc.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []storage.Object{gobj, sobj} {
		if o.Key != "abc.narinfo" || o.Size != int64(len(body)) {
			t.Fatalf("object %+v, want key abc.narinfo size %d", o, len(body))
		}
		if o.ETag != obj.ETag {
			t.Fatalf("ETag %q differs from the one Put returned (%q): CAS after Put would fail", o.ETag, obj.ETag)
		}
		if d := o.ModTime.Sub(obj.ModTime); d < -2*time.Second || d > 2*time.Second {
			t.Fatalf("ModTime %v differs from Put's %v by %v", o.ModTime, obj.ModTime, d)
		}
	}
	// Replace unconditionally: new content, new ETag.
	body2 := []byte("StorePath: /nix/store/z\nURL: nar/w.nar.zst\n") // same length
	obj2 := put(t, st, "abc.narinfo", body2)
	if obj2.ETag == obj.ETag {
		t.Fatalf("ETag unchanged (%q) after replacing the content", obj.ETag)
	}
	if got, _ := get(t, st, "abc.narinfo"); !bytes.Equal(got, body2) {
		t.Fatalf("after replace Get = %q", got)
	}
}

func testRange(t *testing.T, st storage.Store) {
	body := make([]byte, 10000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	put(t, st, "nar/r.nar", body)
	for _, c := range []struct{ off, n int64 }{{0, 10}, {100, 50}, {9990, -1}, {0, -1}, {5000, 5000}, {9999, 1}} {
		r, err := st.GetRange(ctxFor(t), "nar/r.nar", c.off, c.n)
		if err != nil {
			t.Fatalf("GetRange(%d,%d): %v", c.off, c.n, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("GetRange(%d,%d) read: %v", c.off, c.n, err)
		}
		end := int64(len(body))
		if c.n >= 0 {
			end = c.off + c.n
		}
		if !bytes.Equal(got, body[c.off:end]) {
			t.Fatalf("GetRange(%d,%d) = %d bytes, want body[%d:%d]", c.off, c.n, len(got), c.off, end)
		}
		if r.Object().Size != int64(len(body)) {
			t.Fatalf("GetRange Object().Size = %d, want the whole object's %d", r.Object().Size, len(body))
		}
	}
	if _, err := st.GetRange(ctxFor(t), "nar/r.nar", -1, 2); err == nil {
		t.Fatal("GetRange with a negative offset succeeded")
	}
}

func testNotFound(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	put(t, st, "present", []byte("x"))
	const k = "nar/absent.nar.zst"
	_, err := st.Get(ctx, k)
	wantErr(t, "Get", err, storage.ErrNotFound)
	_, err = st.GetRange(ctx, k, 1, 2)
	wantErr(t, "GetRange", err, storage.ErrNotFound)
	_, err = st.Stat(ctx, k)
	wantErr(t, "Stat", err, storage.ErrNotFound)
	obj, _ := st.Stat(ctx, "present")
	_, err = st.Put(ctx, k, strings.NewReader("y"), storage.PutOptions{IfMatch: obj.ETag})
	wantErr(t, "Put IfMatch on a missing key", err, storage.ErrNotFound)
	err = st.Delete(ctx, k, storage.DeleteOptions{IfMatch: obj.ETag})
	wantErr(t, "Delete IfMatch on a missing key", err, storage.ErrNotFound)
	if err := st.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
		t.Fatalf("Delete of an absent key: %v", err)
	}
	if err := st.DeleteMany(ctx, []string{k, "absent/2"}); err != nil {
		t.Fatalf("DeleteMany of absent keys: %v", err)
	}
	if got := keysOf(listAll(t, st, "nar/")); len(got) != 0 {
		t.Fatalf("List(nar/) = %v, want nothing", got)
	}
	if _, err := st.Stat(ctx, "present"); err != nil {
		t.Fatalf("unrelated key gone: %v", err)
	}
	// A key below an existing object's name ("present/x") is simply absent.
	_, err = st.Stat(ctx, "present/x")
	wantErr(t, "Stat below an object", err, storage.ErrNotFound)
}

func testZeroLength(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	put(t, st, "empty", nil)
	got, obj := get(t, st, "empty")
	if len(got) != 0 || obj.Size != 0 {
		t.Fatalf("Get(empty) = %d bytes, size %d", len(got), obj.Size)
	}
	if _, err := st.Put(ctx, "empty2", bytes.NewReader(nil), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatalf("conditional empty put: %v", err)
	}
	l := listAll(t, st, "empty")
	if len(l) != 2 || l["empty"].Size != 0 || l["empty2"].Size != 0 {
		t.Fatalf("List(empty) = %+v", l)
	}
}

// NixKeys are keys of every shape a Nix cache and kiss produce.
var NixKeys = []string{
	"nix-cache-info",
	"0gxb81bz7n4ma3aqgs4ay1rq3zs9yq5d.narinfo",
	"0gxb81bz7n4ma3aqgs4ay1rq3zs9yq5d.ls",
	"nar/1kmbzm1dw4jca8fwjdi3dz7pq34pz99f5paydq6cry42lwg8n2bj.nar.zst",
	"nar/0gxb81bz7n4ma3aqgs4ay1rq3zs9yq5d0gxb81bz7n4ma3aq.nar",
	"log/4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv",
	"log/4cfd372bq5xxc1qxqzbpa2n1flhkr898-gtk+3-3.24.38_x?y=z.drv",
	"realisations/sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0!out.doi",
	"build-trace-v2/sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0/out.doi",
	"debuginfo/8c/1e5f9a3b2d.debug",
	"gcroots/builder-01.example.org/nightly+x86_64-linux=1.2_3",
	"gcroots/.lock/prune",
	"a~b@c,d;e$f&g'h(i)j*k[l]m",
}

func testNixKeys(t *testing.T, st storage.Store) {
	for i, k := range NixKeys {
		put(t, st, k, []byte(fmt.Sprintf("body %d of %s", i, k)))
	}
	for i, k := range NixKeys {
		got, obj := get(t, st, k)
		if want := fmt.Sprintf("body %d of %s", i, k); string(got) != want || obj.Key != k {
			t.Fatalf("Get(%q) = %q (key %q), want %q", k, got, obj.Key, want)
		}
	}
	l := listAll(t, st, "")
	for _, k := range NixKeys {
		if _, ok := l[k]; !ok {
			t.Fatalf("List() misses %q; got %v", k, keysOf(l))
		}
	}
	if got := visible(t, st); len(got) != len(NixKeys) {
		t.Fatalf("List() = %v, want exactly %d keys", got, len(NixKeys))
	}
	if err := st.DeleteMany(ctxFor(t), NixKeys); err != nil {
		t.Fatal(err)
	}
	if got := visible(t, st); len(got) != 0 {
		t.Fatalf("after DeleteMany, List() = %v", got)
	}
}

// BadKeys must be refused by every operation.
var BadKeys = []string{"", "/abs", "trailing/", "a//b", "../etc/passwd", "a/../../b", "a/./b", ".", "..",
	"a\\b", "with space", "new\nline", "tab\t", "nul\x00", "del\x7f", "ü.narinfo", strings.Repeat("k", 1025)}

func testInvalidKeys(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	for _, k := range BadKeys {
		_, err := st.Put(ctx, k, strings.NewReader("x"), storage.PutOptions{})
		wantErr(t, fmt.Sprintf("Put(%q)", k), err, storage.ErrInvalidKey)
		_, err = st.Put(ctx, k, strings.NewReader("x"), storage.PutOptions{IfNotExist: true})
		wantErr(t, fmt.Sprintf("Put(%q, IfNotExist)", k), err, storage.ErrInvalidKey)
		_, err = st.Get(ctx, k)
		wantErr(t, fmt.Sprintf("Get(%q)", k), err, storage.ErrInvalidKey)
		_, err = st.Stat(ctx, k)
		wantErr(t, fmt.Sprintf("Stat(%q)", k), err, storage.ErrInvalidKey)
		err = st.Delete(ctx, k, storage.DeleteOptions{})
		wantErr(t, fmt.Sprintf("Delete(%q)", k), err, storage.ErrInvalidKey)
	}
	put(t, st, "ok", []byte("x"))
	err := st.DeleteMany(ctx, []string{"ok", "../x"})
	if !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("DeleteMany with an invalid key: %v", err)
	}
	if _, err := st.Stat(ctx, "ok"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteMany did not delete the valid key next to an invalid one: %v", err)
	}
	for _, p := range []string{"../", "a//", "/x"} {
		n := 0
		var lerr error
		for _, err := range st.List(ctx, p) {
			n++
			lerr = err
		}
		if n != 1 || !errors.Is(lerr, storage.ErrInvalidKey) {
			t.Fatalf("List(%q) yielded %d items, last error %v; want exactly one ErrInvalidKey", p, n, lerr)
		}
	}
	if got := visible(t, st); len(got) != 0 {
		t.Fatalf("invalid keys left objects: %v", got)
	}
}

func testListPrefixes(t *testing.T, st storage.Store) {
	all := []string{"lst/a", "lst/ab", "lst/abc/d", "lst/b/c/d", "lst/b/c/e", "lst/bc", "lst/b.narinfo", "lstx", "other/lst/a"}
	for _, k := range all {
		put(t, st, k, []byte(k))
	}
	cases := map[string][]string{
		"":          all,
		"lst":       {"lst/a", "lst/ab", "lst/abc/d", "lst/b/c/d", "lst/b/c/e", "lst/bc", "lst/b.narinfo", "lstx"},
		"lst/":      {"lst/a", "lst/ab", "lst/abc/d", "lst/b/c/d", "lst/b/c/e", "lst/bc", "lst/b.narinfo"},
		"lst/a":     {"lst/a", "lst/ab", "lst/abc/d"},
		"lst/abc":   {"lst/abc/d"},
		"lst/abc/":  {"lst/abc/d"},
		"lst/b":     {"lst/b/c/d", "lst/b/c/e", "lst/bc", "lst/b.narinfo"},
		"lst/b/":    {"lst/b/c/d", "lst/b/c/e"},
		"lst/b/c/d": {"lst/b/c/d"},
		"lst/zz":    nil,
		"zz/":       nil,
	}
	for prefix, want := range cases {
		got := listAll(t, st, prefix)
		if prefix == "" {
			got = map[string]storage.Object{}
			for _, k := range visible(t, st) {
				got[k] = storage.Object{Key: k, Size: int64(len(k))}
			}
		}
		w := slices.Clone(want)
		sort.Strings(w)
		if g := keysOf(got); !slices.Equal(g, w) {
			t.Fatalf("List(%q) = %v, want %v", prefix, g, w)
		}
		// ListKeys names the same keys (attributes optional).
		var keys []string
		for o, err := range storage.ListKeys(ctxFor(t), st, prefix) {
			if err != nil {
				t.Fatalf("ListKeys(%q): %v", prefix, err)
			}
			if o.HasAttrs() && o.Size != int64(len(o.Key)) {
				t.Fatalf("ListKeys(%q): %q has size %d, want %d", prefix, o.Key, o.Size, len(o.Key))
			}
			if prefix != "" || slices.Contains(all, o.Key) { // "" also lists other tests' objects
				keys = append(keys, o.Key)
			}
		}
		sort.Strings(keys)
		if !slices.Equal(keys, w) {
			t.Fatalf("ListKeys(%q) = %v, want %v", prefix, keys, w)
		}
		for k, o := range got {
			if o.Size != int64(len(k)) {
				t.Fatalf("List(%q): %q has size %d, want %d", prefix, k, o.Size, len(k))
			}
		}
	}
	// Listed attributes agree with Stat.
	for k, o := range listAll(t, st, "lst/") {
		s, err := st.Stat(ctxFor(t), k)
		if err != nil {
			t.Fatal(err)
		}
		if o.ETag != "" && o.ETag != s.ETag {
			t.Fatalf("List ETag %q != Stat ETag %q for %q", o.ETag, s.ETag, k)
		}
		if d := o.ModTime.Sub(s.ModTime); d < -time.Second || d > time.Second {
			t.Fatalf("List ModTime %v != Stat ModTime %v for %q", o.ModTime, s.ModTime, k)
		}
	}
	// Stopping early is allowed and does not fail.
	n := 0
	for _, err := range st.List(ctxFor(t), "lst/") {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
}

func testDeleteAndList(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	put(t, st, "d/one", []byte("1"))
	put(t, st, "d/two", []byte("2"))
	if err := st.Delete(ctx, "d/one", storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := st.Stat(ctx, "d/one")
	wantErr(t, "Stat after Delete", err, storage.ErrNotFound)
	if got := keysOf(listAll(t, st, "d/")); !slices.Equal(got, []string{"d/two"}) {
		t.Fatalf("List after Delete = %v", got)
	}
	if err := st.Delete(ctx, "d/one", storage.DeleteOptions{}); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	// Delete then re-create with IfNotExist works (no tombstone).
	if _, err := st.Put(ctx, "d/one", strings.NewReader("again"), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatalf("IfNotExist after Delete: %v", err)
	}
}

func testDeleteManyLarge(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	const n = 1105 // more than one S3 DeleteObjects batch and one list page
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("many/%04d.narinfo", i)
	}
	parallel(t, 16, n, func(i int) error {
		_, err := st.Put(ctx, keys[i], strings.NewReader(keys[i]), storage.PutOptions{})
		return err
	})
	put(t, st, "keep/me", []byte("k"))
	if got := listAll(t, st, "many/"); len(got) != n {
		t.Fatalf("List(many/) = %d keys, want %d", len(got), n)
	}
	del := append(slices.Clone(keys), "many/absent-1", "many/absent-2")
	if err := st.DeleteMany(ctx, del); err != nil {
		t.Fatalf("DeleteMany(%d keys): %v", len(del), err)
	}
	if got := listAll(t, st, "many/"); len(got) != 0 {
		t.Fatalf("after DeleteMany %d keys remain, e.g. %v", len(got), keysOf(got)[:min(3, len(got))])
	}
	if got := visible(t, st); !slices.Equal(got, []string{"keep/me"}) {
		t.Fatalf("DeleteMany touched other keys: %v", got)
	}
	if err := st.DeleteMany(ctx, nil); err != nil {
		t.Fatalf("DeleteMany(nil): %v", err)
	}
}

// parallel runs fn(0..n-1) on w workers and fails on the first error.
func parallel(t *testing.T, w, n int, fn func(i int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func testIfNotExist(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	o1, err := st.Put(ctx, "gcroots/.lock/prune", strings.NewReader("first"), storage.PutOptions{IfNotExist: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(ctx, "gcroots/.lock/prune", strings.NewReader("second"), storage.PutOptions{IfNotExist: true})
	wantErr(t, "second IfNotExist", err, storage.ErrPreconditionFailed)
	got, obj := get(t, st, "gcroots/.lock/prune")
	if string(got) != "first" || obj.ETag != o1.ETag {
		t.Fatalf("after a failed IfNotExist: %q etag %q, want %q etag %q", got, obj.ETag, "first", o1.ETag)
	}
	if _, err := st.Put(ctx, "x", strings.NewReader("x"), storage.PutOptions{IfNotExist: true, IfMatch: o1.ETag}); err == nil {
		t.Fatal("Put with both IfNotExist and IfMatch succeeded")
	}
}

// racePut retries ErrConflict (S3 409, transient) a few times.
func racePut(ctx context.Context, st storage.Store, key string, body []byte, opts storage.PutOptions) (storage.Object, error) {
	for i := 0; ; i++ {
		obj, err := st.Put(ctx, key, bytes.NewReader(body), opts)
		if !errors.Is(err, storage.ErrConflict) || i == 5 {
			return obj, err
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
}

// RaceWriters and RaceRounds size the conditional-write races.
var (
	RaceWriters = 16
	RaceRounds  = 8
)

func testIfNotExistRace(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	for round := range RaceRounds {
		key := fmt.Sprintf("gcroots/.lock/race-%d", round)
		type result struct {
			body []byte
			obj  storage.Object
			err  error
		}
		res := make([]result, RaceWriters)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range RaceWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := []byte(fmt.Sprintf(`{"writer":%d,"round":%d,"nonce":"%x"}`, i, round, rand.Uint64()))
				<-start
				obj, err := racePut(ctx, st, key, body, storage.PutOptions{IfNotExist: true})
				res[i] = result{body, obj, err}
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, r := range res {
			switch {
			case r.err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won create-if-absent", round, winner, i)
				}
				winner = i
			case errors.Is(r.err, storage.ErrPreconditionFailed):
			default:
				t.Fatalf("round %d: writer %d: unexpected error %v", round, i, r.err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won", round)
		}
		got, obj := get(t, st, key)
		if !bytes.Equal(got, res[winner].body) || obj.ETag != res[winner].obj.ETag {
			t.Fatalf("round %d: stored %q (etag %s), winner wrote %q (etag %s)", round, got, obj.ETag, res[winner].body, res[winner].obj.ETag)
		}
	}
}

func testIfMatch(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	o1 := put(t, st, "lease", []byte("v1-aaaa"))
	o2, err := st.Put(ctx, "lease", strings.NewReader("v2-bbbb"), storage.PutOptions{IfMatch: o1.ETag})
	if err != nil {
		t.Fatalf("IfMatch with the current ETag: %v", err)
	}
	if o2.ETag == "" || o2.ETag == o1.ETag {
		t.Fatalf("ETag after a replace = %q (was %q): must change", o2.ETag, o1.ETag)
	}
	_, err = st.Put(ctx, "lease", strings.NewReader("v3-cccc"), storage.PutOptions{IfMatch: o1.ETag})
	wantErr(t, "IfMatch with a stale ETag", err, storage.ErrPreconditionFailed)
	_, err = st.Put(ctx, "lease", strings.NewReader("v3-cccc"), storage.PutOptions{IfMatch: `"not-an-etag"`})
	wantErr(t, "IfMatch with a made-up ETag", err, storage.ErrPreconditionFailed)
	got, obj := get(t, st, "lease")
	if string(got) != "v2-bbbb" || obj.ETag != o2.ETag {
		t.Fatalf("after the failed IfMatch: %q etag %s, want v2-bbbb etag %s", got, obj.ETag, o2.ETag)
	}
	// The ETag Put returned is usable for the next CAS (refresh chain).
	cur := o2
	for i := range 5 {
		next, err := st.Put(ctx, "lease", strings.NewReader(fmt.Sprintf("refresh-%d", i)), storage.PutOptions{IfMatch: cur.ETag})
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		if next.ETag == cur.ETag {
			t.Fatalf("refresh %d kept ETag %s", i, cur.ETag)
		}
		cur = next
	}
}

func testIfMatchRace(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	for round := range RaceRounds {
		key := fmt.Sprintf("lease-%d", round)
		base := put(t, st, key, []byte("base"))
		wins := make([][]byte, RaceWriters)
		errs := make([]error, RaceWriters)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range RaceWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := []byte(fmt.Sprintf("writer %d round %d %x", i, round, rand.Uint64()))
				<-start
				_, err := racePut(ctx, st, key, body, storage.PutOptions{IfMatch: base.ETag})
				errs[i] = err
				if err == nil {
					wins[i] = body
				}
			}()
		}
		close(start)
		wg.Wait()
		var winner []byte
		n := 0
		for i, err := range errs {
			if err == nil {
				n++
				winner = wins[i]
			} else if !errors.Is(err, storage.ErrPreconditionFailed) {
				t.Fatalf("round %d writer %d: %v", round, i, err)
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d writers won compare-and-swap on one ETag, want exactly 1", round, n)
		}
		if got, _ := get(t, st, key); !bytes.Equal(got, winner) {
			t.Fatalf("round %d: stored %q, winner wrote %q", round, got, winner)
		}
	}
}

func testDeleteIfMatch(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	o1 := put(t, st, "gcroots/.lock/job.1", []byte("mine"))
	o2 := put(t, st, "gcroots/.lock/job.1", []byte("theirs"))
	err := st.Delete(ctx, "gcroots/.lock/job.1", storage.DeleteOptions{IfMatch: o1.ETag})
	wantErr(t, "Delete with a stale ETag", err, storage.ErrPreconditionFailed)
	if got, _ := get(t, st, "gcroots/.lock/job.1"); string(got) != "theirs" {
		t.Fatalf("a failed conditional delete changed the object: %q", got)
	}
	if err := st.Delete(ctx, "gcroots/.lock/job.1", storage.DeleteOptions{IfMatch: o2.ETag}); err != nil {
		t.Fatalf("Delete with the current ETag: %v", err)
	}
	_, err = st.Stat(ctx, "gcroots/.lock/job.1")
	wantErr(t, "Stat after conditional delete", err, storage.ErrNotFound)
}

// genReader yields n pseudo-random bytes from seed without holding them.
type genReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newGen(seed byte, n int64) *genReader {
	var s [32]byte
	s[0] = seed
	return &genReader{rng: rand.NewChaCha8(s), n: n}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	n, _ := g.rng.Read(p)
	g.n -= int64(n)
	return n, nil
}

// cancelAfter cancels ctx once n bytes were read, and then fails reads.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
	ctx    context.Context
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		<-c.ctx.Done()
		return 0, c.ctx.Err()
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func testCancelledPut(t *testing.T, st storage.Store) {
	for _, c := range []struct {
		name        string
		size, after int64
		opts        storage.PutOptions
	}{
		{"small", 1 << 20, 100 << 10, storage.PutOptions{}},
		{"multipart", 24 << 20, 12 << 20, storage.PutOptions{}},
		{"conditional", 4 << 10, 1 << 10, storage.PutOptions{IfNotExist: true}},
	} {
		ctx, cancel := context.WithCancel(ctxFor(t))
		key := "nar/cancelled-" + c.name + ".nar"
		r := &cancelAfter{r: newGen(1, c.size), n: c.after, cancel: cancel, ctx: ctx}
		_, err := st.Put(ctx, key, r, c.opts)
		cancel()
		if err == nil {
			t.Fatalf("%s: Put succeeded although its context was cancelled mid-stream", c.name)
		}
		_, err = st.Stat(ctxFor(t), key)
		wantErr(t, c.name+": Stat after a cancelled Put", err, storage.ErrNotFound)
	}
	if got := visible(t, st); len(got) != 0 {
		t.Fatalf("cancelled puts left visible objects: %v", got)
	}
}

type failingReader struct {
	r io.Reader
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("source broke")
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

func testFailedReaderPut(t *testing.T, st storage.Store) {
	put(t, st, "nar/old.nar", []byte("old content"))
	_, err := st.Put(ctxFor(t), "nar/old.nar", &failingReader{r: newGen(2, 1<<20), n: 300 << 10}, storage.PutOptions{})
	if err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if got, _ := get(t, st, "nar/old.nar"); string(got) != "old content" {
		t.Fatalf("a failed replace damaged the old object: %d bytes", len(got))
	}
	_, err = st.Put(ctxFor(t), "nar/new.nar", &failingReader{r: newGen(2, 1<<20), n: 300 << 10}, storage.PutOptions{})
	if err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if got := visible(t, st); !slices.Equal(got, []string{"nar/old.nar"}) {
		t.Fatalf("failed put left %v", got)
	}
}

func testClock(t *testing.T, st storage.Store) {
	ctx := ctxFor(t)
	now, err := st.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(now); d < -5*time.Minute || d > 5*time.Minute {
		t.Fatalf("store clock %v is %v away from this host's", now, d)
	}
	obj := put(t, st, "clock", []byte("t"))
	s, err := st.Stat(ctx, "clock")
	if err != nil {
		t.Fatal(err)
	}
	now2, err := st.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range []time.Time{obj.ModTime, s.ModTime} {
		// ModTime has one-second resolution on S3; allow that plus slack.
		if mt.Before(now.Add(-3*time.Second)) || mt.After(now2.Add(3*time.Second)) {
			t.Fatalf("ModTime %v outside [%v, %v] (store Now before and after)", mt, now, now2)
		}
	}
}

func testLarge(t *testing.T, st storage.Store) {
	size := LargeSize
	if mb, err := strconv.Atoi(os.Getenv("KISS_STORAGETEST_LARGE_MB")); err == nil && int64(mb)<<20 > size {
		size = int64(mb) << 20
	}
	ctx := ctxFor(t)
	h := sha256.New()
	obj, err := st.Put(ctx, "nar/large.nar", io.TeeReader(newGen(3, size), h), storage.PutOptions{ContentType: "application/x-nix-nar"})
	if err != nil {
		t.Fatal(err)
	}
	want := h.Sum(nil)
	if obj.Size != size {
		t.Fatalf("Put size %d, want %d", obj.Size, size)
	}
	r, err := st.Get(ctx, "nar/large.nar")
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	n, err := io.Copy(h, r)
	r.Close()
	if err != nil || n != size {
		t.Fatalf("read back %d bytes, err %v; want %d", n, err, size)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("large object read back with a different sha256")
	}
	if st, err := st.Stat(ctx, "nar/large.nar"); err != nil || st.ETag != obj.ETag || st.Size != size {
		t.Fatalf("Stat after a large Put: %+v, %v; Put returned ETag %s", st, err, obj.ETag)
	}
	// A range deep inside the object matches the generator.
	off := size - 5<<20 - 123
	rr, err := st.GetRange(ctx, "nar/large.nar", off, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rr)
	rr.Close()
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(3, size)
	if _, err := io.CopyN(io.Discard, g, off); err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, 1000)
	if _, err := io.ReadFull(g, exp); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, exp) {
		t.Fatalf("GetRange(%d,1000) differs from the generated bytes", off)
	}
}
