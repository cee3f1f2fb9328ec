package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

func readAll(t *testing.T, rd storage.Reader, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClientStore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	c, err := httpstore.Open(e.srv.URL, httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if caps := c.Capabilities(); !caps.AtomicCreate || !caps.CompareAndSwap || caps.Local {
		t.Fatalf("capabilities %+v", caps)
	}
	now, err := c.Now(ctx)
	if err != nil || time.Since(now).Abs() > time.Minute {
		t.Fatalf("Now %v %v", now, err)
	}

	p := newPath("c")
	obj, err := c.Put(ctx, p.narKey(), bytes.NewReader(p.narBody()), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if obj.ETag == "" || obj.ModTime.IsZero() || obj.Size != int64(len(p.narBody())) {
		t.Fatalf("put object %+v", obj)
	}
	st, err := c.Stat(ctx, p.narKey())
	if err != nil || st.ETag != obj.ETag || st.Size != obj.Size || !st.ModTime.Equal(obj.ModTime) {
		t.Fatalf("stat %+v %v, put %+v", st, err, obj)
	}
	rd, err := c.Get(ctx, p.narKey())
	if got := readAll(t, rd, err); got != string(p.narBody()) {
		t.Fatal("get body differs")
	}
	rd, err = c.GetRange(ctx, p.narKey(), 5, 7)
	if got := readAll(t, rd, err); got != string(p.narBody()[5:12]) {
		t.Fatalf("range %q", got)
	}
	rd, err = c.GetRange(ctx, p.narKey(), 3190, -1)
	if got := readAll(t, rd, err); got != string(p.narBody()[3190:]) {
		t.Fatalf("range to end %q", got)
	}
	if _, err := c.Stat(ctx, "nar/absent.nar"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat absent: %v", err)
	}
	if _, err := c.Get(ctx, "nar/absent.nar"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get absent: %v", err)
	}

	// validation errors surface as permanent rejections
	_, err = c.Put(ctx, p.narinfoKey(), bytes.NewReader(p.narinfo(newPath("m"))), storage.PutOptions{})
	var re *httpstore.RemoteError
	if !errors.Is(err, httpstore.ErrRejected) || !errors.As(err, &re) || re.Reason != "missing_reference" || storage.IsTransient(err) {
		t.Fatalf("missing reference: %v", err)
	}

	// conditional writes
	k := "gcroots/.lock/job.1"
	o1, err := c.Put(ctx, k, strings.NewReader(`{"n":1}`), storage.PutOptions{IfNotExist: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, k, strings.NewReader(`{"n":2}`), storage.PutOptions{IfNotExist: true}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("second create: %v", err)
	}
	o2, err := c.Put(ctx, k, strings.NewReader(`{"n":3}`), storage.PutOptions{IfMatch: o1.ETag})
	if err != nil || o2.ETag == o1.ETag {
		t.Fatalf("CAS: %+v %v", o2, err)
	}
	if _, err := c.Put(ctx, k, strings.NewReader(`{"n":4}`), storage.PutOptions{IfMatch: o1.ETag}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("stale CAS: %v", err)
	}
	if _, err := c.Put(ctx, "gcroots/.lock/none.1", strings.NewReader(`{}`), storage.PutOptions{IfMatch: o1.ETag}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("CAS on absent: %v", err)
	}
	if err := c.Delete(ctx, k, storage.DeleteOptions{IfMatch: o1.ETag}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("stale delete: %v", err)
	}
	var keys []string
	for o, err := range c.List(ctx, "gcroots/.lock/") {
		if err != nil {
			t.Fatal(err)
		}
		if o.ETag != o2.ETag || o.Size != 7 {
			t.Errorf("listed %+v, want etag %s", o, o2.ETag)
		}
		keys = append(keys, o.Key)
	}
	if len(keys) != 1 || keys[0] != k {
		t.Fatalf("list %v", keys)
	}
	if err := c.Delete(ctx, k, storage.DeleteOptions{IfMatch: o2.ETag}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
		t.Fatalf("delete absent without condition: %v", err)
	}
	if err := c.Delete(ctx, k, storage.DeleteOptions{IfMatch: o2.ETag}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("conditional delete of absent: %v", err)
	}

	// 503 during a prune is typed, transient and carries Retry-After
	if _, err := e.st.Put(ctx, lockproto.PruneKey, strings.NewReader(`{"ttl":"30m0s"}`), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Put(ctx, "gcroots/.lock/job.2", strings.NewReader(`{}`), storage.PutOptions{IfNotExist: true})
	var pip interface{ PruneInProgress() bool }
	if !errors.Is(err, httpstore.ErrPruneInProgress) || !storage.IsTransient(err) || !errors.As(err, &pip) || !pip.PruneInProgress() ||
		!errors.As(err, &re) || re.RetryAfter <= 0 {
		t.Fatalf("writer lease during prune: %v", err)
	}
}

func TestClientListFailsClosed(t *testing.T) {
	// A listing cut short (no trailer) is an error, never a short result.
	srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"key":"gcroots/a","size":1,"mtime":"2026-11-25T00:00:00Z","etag":"\"x\""}`+"\n")
	})
	c, err := httpstore.Open(srv, httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, failed := 0, false
	for _, err := range c.List(context.Background(), "gcroots/") {
		if err != nil {
			failed = true
			break
		}
		n++
	}
	if !failed || n != 1 {
		t.Fatalf("truncated listing: %d objects, failed=%v", n, failed)
	}
}

// TestLockprotoOverGateway runs the lease protocol through the client store:
// the agreed way `kiss with-lock --cert/--bearer` talks to a remote gateway.
func TestLockprotoOverGateway(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	c, err := httpstore.Open(e.srv.URL, httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := lockproto.Options{TTL: 6 * time.Second, Owner: "test"}
	w, err := lockproto.AcquireWriter(ctx, c, "web1", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Confirm(ctx); err != nil {
		t.Fatalf("writer refresh through the gateway: %v", err)
	}
	// a pruner cannot take the lock while the writer is fresh
	if _, err := lockproto.AcquirePrune(ctx, c, lockproto.Options{TTL: o.TTL, Wait: 300 * time.Millisecond}); !lockproto.IsLocked(err) {
		t.Fatalf("prune while a writer holds: %v", err)
	}
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := lockproto.AcquirePrune(ctx, c, lockproto.Options{TTL: o.TTL})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Confirm(ctx); err != nil {
		t.Fatalf("prune confirm: %v", err)
	}
	// a writer now backs off (the gateway answers 503 or lockproto sees the
	// fresh prune lease) and never holds a lease while the prune lease is fresh
	_, err = lockproto.AcquireWriter(ctx, c, "web2", lockproto.Options{TTL: o.TTL, Wait: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("writer acquired during a prune")
	}
	t.Logf("writer during prune: %v", err)
	if err := p.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for o, err := range e.st.List(ctx, lockproto.LockPrefix) {
		t.Errorf("lease left behind: %+v %v", o, err)
	}
}

// TestStorageCheckThroughGateway: the project's own conformance probe
// (`kiss storage check`) passes through the gateway's HTTP API, on mem://
// and file:// behind it: read-after-write, create-if-absent with one
// winner under a race, If-Match, conditional delete, store clock.
func TestStorageCheckThroughGateway(t *testing.T) {
	for _, name := range []string{"mem", "file"} {
		t.Run(name, func(t *testing.T) {
			var st storage.Store
			if name == "file" {
				var err error
				if st, err = storage.OpenFile(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			e := newEnv(t, st, gateway.Config{Auth: gateway.Open{}})
			c, err := httpstore.Open(e.srv.URL, httpstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			rep := storage.Check(context.Background(), c, storage.CheckOptions{RaceWriters: 8, RaceRounds: 3})
			if !rep.OK() {
				t.Fatalf("storage check through the gateway failed: %v\n%s", rep.Failed(), rep)
			}
		})
	}
}
