package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// s3EscapedKeys are valid keys that gocloud's s3blob (which kiss's Put and
// List go through) stores under another S3 name, and that name. Buckets
// written by earlier kiss versions hold them so; the driver's direct SDK
// calls must find them there.
var s3EscapedKeys = map[string]string{
	"a../b":           "a..__0x2f__b",
	"x/y../z.narinfo": "x/y..__0x2f__z.narinfo",
	"log/..../x":      "log/....__0x2f__x",
	"__0x2f__":        "__0x5f___0x2f__",
	"a__0x-1__b":      "a__0x5f___0x-1__b",
	"___0x41__":       "___0x5f___0x41__",
	"__0x__":          "__0x__",          // no digits: not an escape
	"__0x12":          "__0x12",          // unterminated
	"__0xfffffffff__": "__0xfffffffff__", // not an int32
	"plain.narinfo":   "plain.narinfo",
}

// TestS3Key needs no server: the names of s3EscapedKeys, and keys of every
// shape Nix and kiss use, which need no escaping.
func TestS3Key(t *testing.T) {
	for key, name := range s3EscapedKeys {
		if got := storage.S3Key(key); got != name {
			t.Errorf("S3Key(%q) = %q, want %q", key, got, name)
		}
	}
	for _, key := range storagetest.NixKeys {
		if got := storage.S3Key(key); got != key {
			t.Errorf("S3Key(%q) = %q, want it unchanged", key, got)
		}
	}
}

// sameVersion: a and b describe the same version of one object. ModTime may
// differ by a second: Put reports its response's Date, Stat and Get the
// object's Last-Modified.
func sameVersion(a, b storage.Object) bool {
	d := a.ModTime.Sub(b.ModTime)
	return a.Key == b.Key && a.Size == b.Size && a.ETag == b.ETag && d <= time.Second && d >= -time.Second
}

func TestS3EscapedKeys(t *testing.T) {
	ctx := context.Background()
	st, bk := testenv.VersitygwStore(t)
	for key, name := range s3EscapedKeys {
		body := []byte("body of " + key)
		put, err := st.Put(ctx, key, bytes.NewReader(body), storage.PutOptions{})
		if err != nil {
			t.Fatalf("Put(%q): %v", key, err)
		}
		stat, err := st.Stat(ctx, key)
		if err != nil || !sameVersion(stat, put) {
			t.Errorf("Stat(%q) = %+v, %v; want %+v", key, stat, err, put)
		}
		if _, err := os.Stat(filepath.Join(bk.Dir, name)); err != nil {
			t.Errorf("Put(%q) did not store S3 object %q: %v", key, name, err)
		}
		r, err := st.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, body) || r.Object() != stat {
			t.Errorf("Get(%q) = %q, %+v, %v; want %q, %+v", key, got, r.Object(), err, body, stat)
		}
		r, err = st.GetRange(ctx, key, 2, 3)
		if err != nil {
			t.Fatalf("GetRange(%q): %v", key, err)
		}
		got, err = io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, body[2:5]) || r.Object() != stat {
			t.Errorf("GetRange(%q, 2, 3) = %q, %+v, %v; want %q, %+v", key, got, r.Object(), err, body[2:5], stat)
		}
	}
	listed := map[string]bool{}
	for obj, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		listed[obj.Key] = true
	}
	for key := range s3EscapedKeys {
		if !listed[key] {
			t.Errorf("List does not name %q (got %v)", key, listed)
		}
	}

	// Delete (plain and conditional) and DeleteMany remove the same objects.
	var many []string
	i := 0
	for key := range s3EscapedKeys {
		var err error
		switch i % 3 {
		case 0:
			err = st.Delete(ctx, key, storage.DeleteOptions{})
		case 1:
			obj, serr := st.Stat(ctx, key)
			if serr != nil {
				t.Fatal(serr)
			}
			err = st.Delete(ctx, key, storage.DeleteOptions{IfMatch: obj.ETag})
		case 2:
			many = append(many, key)
		}
		if err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		i++
	}
	if err := st.DeleteMany(ctx, many); err != nil {
		t.Fatal(err)
	}
	for key, name := range s3EscapedKeys {
		if _, err := st.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat(%q) after delete: %v, want not found", key, err)
		}
		if _, err := os.Stat(filepath.Join(bk.Dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("S3 object %q of %q still there after delete (%v)", name, key, err)
		}
	}
}

// s3WithObject opens a fresh versitygw bucket (the store counting its
// requests) holding one 1000-byte object at key.
func s3WithObject(t *testing.T, key string) (st *storage.Counting, body []byte, put storage.Object) {
	t.Helper()
	ctx := context.Background()
	inner, _ := testenv.VersitygwStore(t)
	st = storage.NewCounting(inner)
	body = []byte(strings.Repeat("0123456789", 100))
	var err error
	if put, err = st.Put(ctx, key, bytes.NewReader(body), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return st, body, put
}

// The read path on S3: every field of Object, the whole size for ranges,
// an empty range, and one counted request per call.
func TestS3ReadObject(t *testing.T) {
	ctx := context.Background()
	st, body, put := s3WithObject(t, "nar/x.nar")
	now, err := st.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if put.ETag == "" || put.Size != int64(len(body)) || put.ModTime.After(now.Add(2*time.Second)) || now.Sub(put.ModTime) > time.Minute {
		t.Fatalf("Put = %+v (store clock %v)", put, now)
	}
	before := st.Counts()

	obj, err := st.Stat(ctx, "nar/x.nar")
	if err != nil || !sameVersion(obj, put) {
		t.Fatalf("Stat = %+v, %v; want %+v", obj, err, put)
	}
	for _, c := range []struct{ off, n int64 }{{0, -1}, {0, 10}, {990, -1}, {999, 1}, {5, 0}} {
		r, err := st.GetRange(ctx, "nar/x.nar", c.off, c.n)
		if err != nil {
			t.Fatalf("GetRange(%d, %d): %v", c.off, c.n, err)
		}
		got, err := io.ReadAll(r)
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		end := int64(len(body))
		if c.n >= 0 {
			end = c.off + c.n
		}
		if err != nil || !bytes.Equal(got, body[c.off:end]) {
			t.Fatalf("GetRange(%d, %d) = %d bytes, %v; want body[%d:%d]", c.off, c.n, len(got), err, c.off, end)
		}
		if r.Object() != obj {
			t.Fatalf("GetRange(%d, %d).Object() = %+v, want Stat's %+v", c.off, c.n, r.Object(), obj)
		}
	}
	after := st.Counts()
	if g, h := after["http:GetObject"]-before["http:GetObject"], after["http:HeadObject"]-before["http:HeadObject"]; g != 5 || h != 1 {
		t.Fatalf("5 reads and a stat sent %d GetObject and %d HeadObject requests", g, h)
	}
}

// A gateway serving many downloads at once must keep its S3 connections:
// after 32 concurrent reads have all finished, 32 more open none.
func TestS3KeepsConcurrentConnections(t *testing.T) {
	const conc = 32
	ctx := context.Background()
	st, _ := testenv.VersitygwStore(t)
	if _, err := st.Put(ctx, "nar/x.nar", strings.NewReader(strings.Repeat("x", 1<<16)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var fresh atomic.Int64
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		if !ci.Reused {
			fresh.Add(1)
		}
	}})
	round := func() {
		// All readers hold their response open until every one has it,
		// so conc connections are in use at once.
		var opened, done sync.WaitGroup
		opened.Add(conc)
		errs := make(chan error, conc)
		for range conc {
			done.Go(func() {
				r, err := st.Get(tctx, "nar/x.nar")
				opened.Done()
				if err != nil {
					errs <- err
					return
				}
				defer r.Close()
				opened.Wait()
				if _, err := io.Copy(io.Discard, r); err != nil {
					errs <- err
				}
			})
		}
		done.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	round()
	first := fresh.Swap(0)
	round()
	if again := fresh.Load(); again != 0 {
		t.Fatalf("the second round of %d concurrent reads opened %d new connections (the first %d)", conc, again, first)
	}
}

// TestS3PresignGet: a presigned URL reads the object with a plain HTTP
// client (no credentials), ranges included; it names an absent key as 404,
// stops working once expired, and signs without a request to the server.
func TestS3PresignGet(t *testing.T) {
	ctx := context.Background()
	st, body, _ := s3WithObject(t, "nar/p.nar")
	ps, ok := storage.As[storage.Presigner](st) // through the counting decorator
	if !ok {
		t.Fatal("the s3 store is not a Presigner")
	}
	before := st.Counts()
	u, err := ps.PresignGet(ctx, "nar/p.nar", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Counts()["http:GetObject"] - before["http:GetObject"]; n != 0 {
		t.Fatalf("presigning sent %d requests", n)
	}
	get := func(u string, hdr ...string) (int, []byte) {
		req, _ := http.NewRequest("GET", u, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	if code, got := get(u); code != 200 || !bytes.Equal(got, body) {
		t.Fatalf("presigned GET: %d, %d bytes", code, len(got))
	}
	if code, got := get(u, "Range", "bytes=10-19"); code != 206 || string(got) != "0123456789" {
		t.Fatalf("presigned ranged GET: %d %q", code, got)
	}
	if !storage.PresignsDirectly(st) {
		t.Error("the s3 store presigns through the SDK's middleware, not directly")
	}
	// keys with characters a URL path escapes
	for _, k := range []string{"realisations/sha256:1b2c!out.doi", "log/x+y=z,w.drv", "build-trace-v2/a~b/c@d.doi"} {
		if _, err := st.Put(ctx, k, bytes.NewReader([]byte(k)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		ku, err := ps.PresignGet(ctx, k, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if code, got := get(ku); code != 200 || string(got) != k {
			t.Fatalf("presigned GET of %q: %d %q", k, code, got)
		}
	}
	if code, _ := get(u + "x"); code == 200 {
		t.Fatal("a tampered URL was accepted")
	}
	absent, err := ps.PresignGet(ctx, "nar/absent.nar", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(absent); code != 404 {
		t.Fatalf("presigned GET of an absent key: %d, want 404", code)
	}
	short, err := ps.PresignGet(ctx, "nar/p.nar", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	if code, _ := get(short); code != 403 {
		t.Fatalf("expired presigned GET: %d, want 403", code)
	}
	if _, err := ps.PresignGet(ctx, "../x", time.Minute); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("presign of an invalid key: %v", err)
	}
}
