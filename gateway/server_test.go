package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

func TestReadHeaders(t *testing.T) {
	for _, name := range []string{"mem", "file"} {
		t.Run(name, func(t *testing.T) {
			var st storage.Store
			if name == "file" {
				var err error
				if st, err = storage.OpenFile(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			e := newEnv(t, st, gateway.Config{})
			p := newPath("hello")
			e.put(p.narKey(), p.narBody())
			e.put(p.narinfoKey(), p.narinfo())
			e.put("gcroots/web1", p.marker())

			r := e.do("GET", "/"+p.narinfoKey(), nil)
			wantCode(t, "narinfo", r, 200)
			if ct := r.hdr.Get("Content-Type"); ct != "text/x-nix-narinfo" {
				t.Errorf("narinfo Content-Type %q", ct)
			}
			if cc := r.hdr.Get("Cache-Control"); cc != "no-cache" {
				t.Errorf("narinfo Cache-Control %q", cc)
			}
			if r.body != string(p.narinfo()) {
				t.Errorf("narinfo body differs")
			}
			etag := r.hdr.Get("ETag")
			if !strings.HasPrefix(etag, `"`) {
				t.Fatalf("ETag %q not a quoted entity tag", etag)
			}
			wantCode(t, "If-None-Match", e.do("GET", "/"+p.narinfoKey(), nil, "If-None-Match", etag), 304)
			wantCode(t, "If-None-Match other", e.do("GET", "/"+p.narinfoKey(), nil, "If-None-Match", `"other"`), 200)

			nar := p.narBody()
			r = e.do("GET", "/"+p.narKey(), nil, "Range", "bytes=10-29")
			wantCode(t, "range", r, 206)
			if r.body != string(nar[10:30]) {
				t.Errorf("range body %q, want %q", r.body, nar[10:30])
			}
			if ct := r.hdr.Get("Content-Type"); ct != "application/x-nix-nar" {
				t.Errorf("nar Content-Type %q", ct)
			}
			r = e.do("GET", "/"+p.narKey(), nil, "Range", "bytes=-5")
			wantCode(t, "suffix range", r, 206)
			if r.body != string(nar[len(nar)-5:]) {
				t.Errorf("suffix range %q", r.body)
			}
			r = e.do("GET", "/"+p.narKey(), nil, "Range", "bytes=5000-")
			wantCode(t, "unsatisfiable range", r, 416)
			if cr := r.hdr.Get("Content-Range"); cr != "bytes */3200" {
				t.Errorf("416 Content-Range %q", cr)
			}
			r = e.do("GET", "/"+p.narKey(), nil, "Range", "bytes=0-1,5-6")
			wantCode(t, "several ranges: the whole object", r, 200)
			if r.body != string(nar) {
				t.Errorf("multi-range answer is not the whole object")
			}
			if lm := e.do("HEAD", "/"+p.narinfoKey(), nil).hdr.Get("Last-Modified"); lm == "" {
				t.Errorf("no Last-Modified")
			} else {
				wantCode(t, "If-Modified-Since", e.do("GET", "/"+p.narinfoKey(), nil, "If-Modified-Since", lm), 304)
			}
			r = e.do("HEAD", "/"+p.narKey(), nil)
			wantCode(t, "head", r, 200)
			if r.hdr.Get("Content-Length") != "3200" || r.body != "" {
				t.Errorf("HEAD Content-Length %q body %q", r.hdr.Get("Content-Length"), r.body)
			}
			r = e.do("GET", "/"+p.narKey(), nil)
			if r.body != string(nar) {
				t.Errorf("nar body differs (%d bytes)", len(r.body))
			}

			r = e.do("GET", "/gcroots/web1", nil)
			wantCode(t, "marker", r, 200)
			if cc := r.hdr.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("marker Cache-Control %q", cc)
			}

			r = e.do("GET", "/nix-cache-info", nil)
			wantCode(t, "nix-cache-info", r, 200)
			for _, l := range []string{"StoreDir: /nix/store\n", "WantMassQuery: 1\n", "Priority: 30\n"} {
				if !strings.Contains(r.body, l) {
					t.Errorf("nix-cache-info %q lacks %q", r.body, l)
				}
			}
			wantCode(t, "absent", e.do("GET", "/"+newPath("x").narinfoKey(), nil), 404)
			wantCode(t, "internal file", e.do("GET", "/.kiss/closures", nil), 404)
			wantCode(t, "traversal", e.do("GET", "/gcroots/../"+p.narinfoKey(), nil), 400)
			wantCode(t, "lease read by reader", e.do("GET", "/gcroots/.lock/prune", nil), 403)
			wantCode(t, "healthz", e.do("GET", "/healthz", nil), 200)
		})
	}
}

func TestWriteValidation(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, MaxUploadSize: 1 << 20})
	dep, top := newPath("dep"), newPath("top")

	r := e.do("PUT", "/"+dep.narinfoKey(), dep.narinfo())
	wantCode(t, "narinfo before NAR", r, 409)
	if !strings.Contains(r.body, dep.narKey()) || r.hdr.Get("X-Kiss-Error") != "missing_nar" {
		t.Errorf("409 does not name the NAR: %q %q", r.body, r.hdr.Get("X-Kiss-Error"))
	}
	wantCode(t, "NAR", e.do("PUT", "/"+dep.narKey(), dep.narBody()), 201)
	wantCode(t, "narinfo", e.do("PUT", "/"+dep.narinfoKey(), dep.narinfo(dep)), 201) // self-reference is fine

	wantCode(t, "top NAR", e.do("PUT", "/"+top.narKey(), top.narBody()), 201)
	missing := newPath("missing")
	r = e.do("PUT", "/"+top.narinfoKey(), top.narinfo(dep, missing))
	wantCode(t, "missing reference", r, 409)
	if !strings.Contains(r.body, missing.narinfoKey()) || r.hdr.Get("X-Kiss-Error") != "missing_reference" {
		t.Errorf("409 does not name the reference: %q", r.body)
	}
	if e.has(top.narinfoKey()) {
		t.Fatal("refused narinfo was stored")
	}
	wantCode(t, "complete narinfo", e.do("PUT", "/"+top.narinfoKey(), top.narinfo(dep)), 201)

	wantCode(t, "key mismatch", e.do("PUT", "/"+newPath("other").narinfoKey(), top.narinfo(dep)), 400)
	wantCode(t, "garbage narinfo", e.do("PUT", "/"+newPath("g").narinfoKey(), []byte("hello world\n")), 400)
	wantCode(t, "traversal", e.do("PUT", "/gcroots/../x.narinfo", []byte("x")), 400)
	wantCode(t, "traversal encoded", e.do("PUT", "/nar/%2e%2e/x.nar", []byte("x")), 400)
	wantCode(t, "unknown shape", e.do("PUT", "/random-file", []byte("x")), 400)
	wantCode(t, "dot dir", e.do("PUT", "/.kiss/closures", []byte("x")), 400)
	wantCode(t, "nar delete", e.do("DELETE", "/"+top.narKey(), nil), 405)
	if !e.has(top.narKey()) {
		t.Fatal("DELETE removed a NAR")
	}

	big := bytes.Repeat([]byte("x"), 1<<20+1)
	wantCode(t, "oversized", e.do("PUT", "/nar/big.nar", big), 413)
	// without a Content-Length the limit still holds while streaming
	gw := e.srv.URL + "/nar/big2.nar"
	req, _ := http.NewRequest("PUT", gw, struct{ *bytes.Reader }{bytes.NewReader(big)})
	req.ContentLength = -1
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Fatalf("chunked oversized: %d", res.StatusCode)
	}
	if e.has("nar/big.nar") || e.has("nar/big2.nar") {
		t.Fatal("oversized body stored")
	}

	// markers
	wantCode(t, "empty marker", e.do("PUT", "/gcroots/web1", []byte("\n")), 400)
	wantCode(t, "garbage marker", e.do("PUT", "/gcroots/web1", []byte(top.abs()+"\nrm -rf /\n")), 400)
	// One byte over nixcache.MaxMarkerSize, the one marker limit (this
	// gateway refused more than 4 KiB before; the pruner read 64 MiB).
	huge := bytes.Repeat(top.marker(), nixcache.MaxMarkerSize/len(top.marker())+1)
	wantCode(t, "huge marker", e.do("PUT", "/gcroots/web1", huge), 413)
	wantCode(t, "marker", e.do("PUT", "/gcroots/web1", []byte("# web1\n"+top.abs()+"\n")), 201)
	wantCode(t, "nested marker", e.do("PUT", "/gcroots/ci/main/1", top.marker()), 201)
	wantCode(t, "marker delete", e.do("DELETE", "/gcroots/web1", nil), 204)
	if e.has("gcroots/web1") {
		t.Fatal("marker not deleted")
	}
	// other kinds
	for _, k := range []string{top.hash + ".ls", "log/" + top.base() + ".drv", "realisations/sha256:abc!out.doi", "debuginfo/0123abcd", "build-trace-v2/x.drv/out.doi"} {
		wantCode(t, k, e.do("PUT", "/"+k, []byte("{}")), 201)
	}

	// metrics count the refusals by reason
	r = e.do("GET", "/metrics", nil)
	for _, want := range []string{`kiss_gateway_rejected_writes_total{reason="missing_reference"} 1`, `kiss_gateway_rejected_writes_total{reason="too_large"} 3`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestWriteAccess(t *testing.T) {
	p := newPath("p")
	readers := newEnv(t, nil, gateway.Config{}) // OpenReads{} with no writers
	wantCode(t, "reader PUT", readers.do("PUT", "/"+p.narKey(), p.narBody()), 403)
	// a large body refused unread: the client still reads the answer (the
	// connection lingers instead of resetting)
	wantCode(t, "reader PUT of 16 MiB", readers.do("PUT", "/"+p.narKey(), bytes.Repeat([]byte("x"), 16<<20)), 403)
	wantCode(t, "reader DELETE", readers.do("DELETE", "/gcroots/x", nil), 403)
	ro := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, ReadOnly: true})
	r := ro.do("PUT", "/"+p.narKey(), p.narBody())
	wantCode(t, "read-only PUT", r, 403)
	if r.hdr.Get("X-Kiss-Error") != "read_only" {
		t.Errorf("reason %q", r.hdr.Get("X-Kiss-Error"))
	}
	if readers.has(p.narKey()) || ro.has(p.narKey()) {
		t.Fatal("refused write stored")
	}
}

func TestLeases(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, storage.NewMem(clock), gateway.Config{Auth: gateway.Open{}})

	body := []byte(`{"version":1,"kind":"writer","nonce":"aa"}`)
	r := e.do("PUT", "/gcroots/.lock/job.1", body, "If-None-Match", "*")
	wantCode(t, "create", r, 201)
	etag := r.hdr.Get("ETag")
	wantCode(t, "create again", e.do("PUT", "/gcroots/.lock/job.1", body, "If-None-Match", "*"), 412)
	r = e.do("PUT", "/gcroots/.lock/job.1", body, "If-Match", etag)
	wantCode(t, "refresh", r, 201)
	wantCode(t, "refresh with old etag", e.do("PUT", "/gcroots/.lock/job.1", body, "If-Match", etag), 412)
	wantCode(t, "refresh absent", e.do("PUT", "/gcroots/.lock/gone.1", body, "If-Match", etag), 404)
	wantCode(t, "delete old etag", e.do("DELETE", "/gcroots/.lock/job.1", nil, "If-Match", etag), 412)
	etag = r.hdr.Get("ETag")

	// a fresh prune lease: new writer leases get 503 + Retry-After
	prune := []byte(`{"version":1,"kind":"prune","nonce":"bb","ttl":"10m0s"}`)
	r = e.do("PUT", "/gcroots/.lock/prune", prune, "If-None-Match", "*")
	wantCode(t, "prune lease", r, 201)
	pruneTag := r.hdr.Get("ETag")
	r = e.do("PUT", "/gcroots/.lock/job.2", body, "If-None-Match", "*")
	wantCode(t, "writer during prune", r, 503)
	if r.hdr.Get("Retry-After") == "" || r.hdr.Get("X-Kiss-Error") != "prune_in_progress" {
		t.Errorf("503 without Retry-After/reason: %v", r.hdr)
	}
	if e.has("gcroots/.lock/job.2") {
		t.Fatal("refused lease stored")
	}
	// the running writer may still refresh and always release
	r = e.do("PUT", "/gcroots/.lock/job.1", body, "If-Match", etag)
	wantCode(t, "refresh during prune", r, 201)
	wantCode(t, "release during prune", e.do("DELETE", "/gcroots/.lock/job.1", nil, "If-Match", r.hdr.Get("ETag")), 204)
	// the pruner refreshes its own lease
	r = e.do("PUT", "/gcroots/.lock/prune", prune, "If-Match", pruneTag)
	wantCode(t, "prune refresh", r, 201)

	// listing (writers only for leases)
	r = e.do("GET", "/gcroots/.lock/?list=1", nil)
	wantCode(t, "list", r, 200)
	if !strings.Contains(r.body, `"key":"gcroots/.lock/prune"`) || !strings.Contains(r.body, `{"end":true,"count":1}`) {
		t.Errorf("listing %q", r.body)
	}

	// Staleness is lockproto's, on the store's clock: the longer of the
	// gateway's TTL (default 30m) and the lease's own (10m), as a writer
	// taking its lease directly would judge it.
	advance(11 * time.Minute)
	wantCode(t, "writer 11m after the prune refresh", e.do("PUT", "/gcroots/.lock/job.3", body, "If-None-Match", "*"), 503)
	advance(20 * time.Minute)
	wantCode(t, "writer after stale prune", e.do("PUT", "/gcroots/.lock/job.3", body, "If-None-Match", "*"), 201)
}

func TestListAccess(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{})
	p := newPath("p")
	e.put("gcroots/web1", p.marker())
	e.put("gcroots/.lock/prune", []byte("{}"))
	r := e.do("GET", "/gcroots/?list=1", nil)
	wantCode(t, "reader lists markers", r, 200)
	if !strings.Contains(r.body, "gcroots/web1") || strings.Contains(r.body, ".lock") {
		t.Errorf("reader listing %q", r.body)
	}
	wantCode(t, "reader lists leases", e.do("GET", "/gcroots/.lock/?list=1", nil), 403)
	wantCode(t, "reader lists cache", e.do("GET", "/?list=1", nil), 403)
}

// presignedMem is a mem store that presigns like S3 would (for the
// redirect tests; the S3 signing itself is tested in storage).
type presignedMem struct{ storage.Store }

func (presignedMem) PresignGet(_ context.Context, key string, ttl time.Duration) (string, error) {
	return fmt.Sprintf("http://bucket.invalid/%s?ttl=%d", key, int(ttl.Seconds())), nil
}

func TestRedirectReads(t *testing.T) {
	p := newPath("r")
	for _, c := range []struct {
		mode             gateway.RedirectMode
		narinfo, nar     bool // redirected?
		writerRedirected bool
	}{
		{gateway.RedirectAll, true, true, false},
		{gateway.RedirectNARs, false, true, false},
	} {
		st := presignedMem{storage.NewMem(nil)}
		e := newEnv(t, st, gateway.Config{Redirect: c.mode, RedirectTTL: time.Minute, Auth: gateway.OpenReads{Writers: bearerWriter{}}})
		e.put(p.narKey(), p.narBody())
		e.put(p.narinfoKey(), p.narinfo())
		e.put("gcroots/web1", p.marker())
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		get := func(method, key string, hdr ...string) *http.Response {
			req, _ := http.NewRequest(method, e.srv.URL+"/"+key, nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			res, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res
		}
		check := func(what string, res *http.Response, redirected bool, key string) {
			t.Helper()
			if !redirected {
				if res.StatusCode != 200 {
					t.Errorf("mode %d, %s: %d, want 200 from the gateway", c.mode, what, res.StatusCode)
				}
				return
			}
			want := "http://bucket.invalid/" + key + "?ttl=60"
			if res.StatusCode != 302 || res.Header.Get("Location") != want || res.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("mode %d, %s: %d Location %q Cache-Control %q, want 302 to %q", c.mode, what, res.StatusCode, res.Header.Get("Location"), res.Header.Get("Cache-Control"), want)
			}
		}
		check("narinfo", get("GET", p.narinfoKey()), c.narinfo, p.narinfoKey())
		check("NAR", get("GET", p.narKey()), c.nar, p.narKey())
		check("NAR, ranged", get("GET", p.narKey(), "Range", "bytes=0-9"), c.nar, p.narKey())
		check("HEAD narinfo", get("HEAD", p.narinfoKey()), false, "")
		check("marker", get("GET", "gcroots/web1"), false, "")
		check("nix-cache-info", get("GET", "nix-cache-info"), false, "")
		check("NAR read by a writer", get("GET", p.narKey(), "Authorization", "Bearer w"), c.writerRedirected, p.narKey())
	}

	// refused configurations
	if _, err := gateway.New(storage.NewMem(nil), gateway.Config{Redirect: gateway.RedirectAll}); err == nil {
		t.Error("redirects over a store that cannot presign were accepted")
	}
	if _, err := gateway.New(presignedMem{storage.NewMem(nil)}, gateway.Config{Redirect: gateway.RedirectAll, Upstream: "http://up.invalid"}); err == nil {
		t.Error("redirects with an upstream were accepted")
	}
	for in, want := range map[string]gateway.RedirectMode{"none": gateway.RedirectNone, "nar": gateway.RedirectNARs, "all": gateway.RedirectAll} {
		if got, err := gateway.ParseRedirectMode(in); err != nil || got != want {
			t.Errorf("ParseRedirectMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := gateway.ParseRedirectMode("some"); err == nil {
		t.Error("ParseRedirectMode accepted a bad mode")
	}
}

// bearerWriter lets any request with a bearer token write.
type bearerWriter struct{}

func (bearerWriter) Authenticate(_ context.Context, c gateway.Credentials) (gateway.Access, error) {
	if c.Authorization == "" {
		return gateway.Access{}, &gateway.AuthError{Status: 401, Reason: "no token"}
	}
	return gateway.Access{Subject: "w", Read: true, Write: true}, nil
}

// syncRecorder is a store that records which puts deferred their sync and
// which keys were synced, and can fail a sync.
type syncRecorder struct {
	storage.Store
	mu       sync.Mutex
	unsynced []string
	synced   []string
	failSync bool
}

func (r *syncRecorder) Put(ctx context.Context, key string, rd io.Reader, o storage.PutOptions) (storage.Object, error) {
	if o.Unsynced {
		r.mu.Lock()
		r.unsynced = append(r.unsynced, key)
		r.mu.Unlock()
	}
	return r.Store.Put(ctx, key, rd, o)
}

func (r *syncRecorder) Sync(_ context.Context, key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failSync {
		return errors.New("disk on fire")
	}
	r.synced = append(r.synced, key)
	return nil
}

// TestNarSyncDeferred: a NAR is stored without waiting for its sync; the
// narinfo that refers to it syncs it (beside its own) before it is
// acknowledged, and is withdrawn if that sync fails.
func TestNarSyncDeferred(t *testing.T) {
	rec := &syncRecorder{Store: storage.NewMem(nil)}
	e := newEnv(t, rec, gateway.Config{Auth: gateway.Open{}})
	p := newPath("s")
	wantCode(t, "NAR", e.do("PUT", "/"+p.narKey(), p.narBody()), 201)
	wantCode(t, "marker-free narinfo", e.do("PUT", "/"+p.narinfoKey(), p.narinfo()), 201)
	rec.mu.Lock()
	if fmt.Sprint(rec.unsynced) != fmt.Sprint([]string{p.narKey()}) || fmt.Sprint(rec.synced) != fmt.Sprint([]string{p.narKey()}) {
		t.Errorf("unsynced puts %v, synced %v; want the NAR deferred and then synced by its narinfo", rec.unsynced, rec.synced)
	}
	rec.failSync = true
	rec.mu.Unlock()

	q := newPath("q")
	wantCode(t, "NAR", e.do("PUT", "/"+q.narKey(), q.narBody()), 201)
	r := e.do("PUT", "/"+q.narinfoKey(), q.narinfo())
	if r.code < 500 {
		t.Fatalf("narinfo whose NAR cannot be synced: %d, want a 5xx", r.code)
	}
	if e.has(q.narinfoKey()) {
		t.Fatal("a narinfo whose NAR could not be synced was left in place")
	}
}

// earlyAnswer is a store whose Put answers at once, refusing, while a
// goroutine keeps reading the body, as net/http's transport does when the
// server it writes to answers before the body is sent.
type earlyAnswer struct {
	storage.Store
	reads chan error
}

func (e earlyAnswer) Put(_ context.Context, _ string, r io.Reader, _ storage.PutOptions) (storage.Object, error) {
	go func() {
		time.Sleep(50 * time.Millisecond) // until the handler has returned
		_, err := io.Copy(io.Discard, r)
		e.reads <- err
	}()
	return storage.Object{}, storage.ErrPreconditionFailed
}

// TestBodyReadAfterAnswer: a store that still reads a request body after
// its Put returned gets an error, not fasthttp's released (and reused)
// stream; the gateway goes on serving.
func TestBodyReadAfterAnswer(t *testing.T) {
	st := earlyAnswer{Store: storage.NewMem(nil), reads: make(chan error, 4)}
	e := newEnv(t, st, gateway.Config{Auth: gateway.Open{}})
	for i := 0; i < 3; i++ {
		p := newPath(fmt.Sprint("early", i))
		wantCode(t, "early refusal", e.do("PUT", "/"+p.narKey(), bytes.Repeat([]byte("x"), 1<<20)), 412)
		if err := <-st.reads; err == nil {
			t.Fatal("a read after the request ended succeeded")
		}
		wantCode(t, "next request", e.do("GET", "/nix-cache-info", nil), 200)
	}
}

// TestSmallObjectCache: narinfos read from a file:// store are served from
// memory only while the file is the one that was read: a replaced narinfo
// is read again, a deleted one is 404, conditions still apply.
func TestSmallObjectCache(t *testing.T) {
	st, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, st, gateway.Config{})
	p := newPath("c")
	e.put(p.narinfoKey(), p.narinfo())
	for i := 0; i < 3; i++ {
		r := e.do("GET", "/"+p.narinfoKey(), nil)
		if r.code != 200 || r.body != string(p.narinfo()) {
			t.Fatalf("read %d: %d %q", i, r.code, r.body)
		}
	}
	etag := e.do("GET", "/"+p.narinfoKey(), nil).hdr.Get("ETag")
	wantCode(t, "cached, If-None-Match", e.do("GET", "/"+p.narinfoKey(), nil, "If-None-Match", etag), 304)
	other := p.narinfo(newPath("dep"))
	e.put(p.narinfoKey(), other)
	if r := e.do("GET", "/"+p.narinfoKey(), nil); r.body != string(other) || r.hdr.Get("ETag") == etag {
		t.Fatalf("after a replace: %q (ETag %s, was %s)", r.body, r.hdr.Get("ETag"), etag)
	}
	if err := st.Delete(context.Background(), p.narinfoKey(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "after a delete", e.do("GET", "/"+p.narinfoKey(), nil), 404)
}

// TestFirstNarinfoStoresCacheInfo: Nix never uploads nix-cache-info through
// the gateway (it reads the gateway's own), so the gateway writes one into
// the store with the first narinfo it accepts, if there is none: it is what
// marks a directory as a binary cache for kiss prune. An existing one is
// left alone.
func TestFirstNarinfoStoresCacheInfo(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, StoreDir: "/gnu/store"})
	p := fakePath{hash: newPath("x").hash, name: "x"}
	info := strings.ReplaceAll(string(p.narinfo()), "/nix/store/", "/gnu/store/")
	wantCode(t, "NAR", e.do("PUT", "/"+p.narKey(), p.narBody()), 201)
	if e.has("nix-cache-info") {
		t.Fatal("nix-cache-info stored before any narinfo")
	}
	wantCode(t, "narinfo", e.do("PUT", "/"+p.narinfoKey(), []byte(info)), 201)
	if got := e.get("nix-cache-info"); got != "StoreDir: /gnu/store\n" {
		t.Fatalf("stored nix-cache-info = %q", got)
	}

	e2 := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	e2.put("nix-cache-info", []byte("StoreDir: /nix/store\nPriority: 10\n"))
	q := newPath("y")
	wantCode(t, "NAR", e2.do("PUT", "/"+q.narKey(), q.narBody()), 201)
	wantCode(t, "narinfo", e2.do("PUT", "/"+q.narinfoKey(), q.narinfo()), 201)
	if got := e2.get("nix-cache-info"); got != "StoreDir: /nix/store\nPriority: 10\n" {
		t.Fatalf("an existing nix-cache-info was replaced: %q", got)
	}
}

// A writer's nix-cache-info must name the store directory the gateway
// validates narinfos and markers against. Any body used to be stored: one
// PUT of "StoreDir: /elsewhere" made every marker name nothing to the
// pruner (kiss prune refused, exit 4) and every kiss with-lock refuse its
// store path (exit 2), until an operator repaired the file.
func TestCacheInfoPutKeepsStoreDir(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	const good = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
	wantCode(t, "matching StoreDir", e.do("PUT", "/nix-cache-info", []byte(good)), 201)
	for _, body := range []string{
		"StoreDir: /evil\n",
		"StoreDir: /nix/store/\n",
		"StoreDir: /nix/store\nStoreDir: /evil\n",
		"Priority: 10\n", // no StoreDir: /nix/store for the pruner, so fine here…
	} {
		r := e.do("PUT", "/nix-cache-info", []byte(body))
		if body == "Priority: 10\n" {
			wantCode(t, "no StoreDir (the default, /nix/store)", r, 201)
			e.put("nix-cache-info", []byte(good))
			continue
		}
		wantCode(t, fmt.Sprintf("nix-cache-info %q", body), r, 400)
		if got := r.hdr.Get("X-Kiss-Error"); got != "malformed" {
			t.Errorf("nix-cache-info %q: X-Kiss-Error %q, want malformed", body, got)
		}
		if got := e.get("nix-cache-info"); got != good {
			t.Fatalf("a refused nix-cache-info replaced the stored one: %q", got)
		}
	}
	// …but not where the store directory is another one.
	g := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, StoreDir: "/gnu/store"})
	wantCode(t, "no StoreDir in a /gnu/store cache", g.do("PUT", "/nix-cache-info", []byte("Priority: 10\n")), 400)
	wantCode(t, "StoreDir: /gnu/store", g.do("PUT", "/nix-cache-info", []byte("StoreDir: /gnu/store\n")), 201)
}

// A build log is stored under its derivation's base name (what Nix writes
// and what the pruner reads to decide it). Any other name under log/ used
// to be accepted, and the pruner, which cannot tell which derivation such
// a log belongs to, kept it for ever.
func TestLogKeyMustNameADerivation(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	drv := newPath("x.drv")
	wantCode(t, "log of a derivation", e.do("PUT", "/log/"+drv.base(), []byte("build log\n")), 201)
	for _, key := range []string{"log/foo", "log/" + drv.hash, "log/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x.drv"} {
		r := e.do("PUT", "/"+key, []byte("junk\n"))
		wantCode(t, key, r, 400)
		if got := r.hdr.Get("X-Kiss-Error"); got != "invalid_key" {
			t.Errorf("%s: X-Kiss-Error %q, want invalid_key", key, got)
		}
		if e.has(key) {
			t.Errorf("%s was stored", key)
		}
	}
}

// A narinfo the real Nix reads as corrupt (no NarHash, CRLF, a last line
// without its newline) or reads differently from the pruner ("URL:nar/…",
// which Nix reads as "ar/…") is refused: every client substituting it
// would fail. The pruner's own parse is lenient and used to let them in.
// e2e's TestNarInfoUploadAgreesWithNix checks each rule against Nix.
func TestNarinfoNixCannotReadRefused(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}})
	p := newPath("x")
	e.put(p.narKey(), p.narBody())
	good := string(p.narinfo())
	for name, body := range map[string]string{
		"no NarHash":       strings.Replace(good, "NarHash: sha256:1kmbzm1dw4jca8fwjdi3dz7pq34pz99f5paydq6cry42lwg8n2bj\n", "", 1),
		"CRLF":             strings.ReplaceAll(good, "\n", "\r\n"),
		"no final newline": strings.TrimSuffix(good, "\n"),
		"Key:value":        strings.Replace(good, "URL: ", "URL:", 1),
		"NarSize 0":        strings.Replace(good, "NarSize: 4096", "NarSize: 0", 1),
	} {
		r := e.do("PUT", "/"+p.narinfoKey(), []byte(body))
		wantCode(t, name, r, 400)
		if got := r.hdr.Get("X-Kiss-Error"); got != "malformed" {
			t.Errorf("%s: X-Kiss-Error %q, want malformed", name, got)
		}
		if e.has(p.narinfoKey()) {
			t.Fatalf("%s: stored", name)
		}
	}
	wantCode(t, "as Nix writes it", e.do("PUT", "/"+p.narinfoKey(), []byte(good)), 201)
}

// TestCacheControlOfMutableKeys: a narinfo, an .ls listing and a debuginfo
// link are named by a store path or build id, not by their own bytes: a
// prune deletes them and a writer puts them again with other bytes (new
// signatures, another build's NAR). A shared cache in front of the gateway
// (a CDN, nginx proxy_cache) must not keep them for a year without asking
// ("immutable", max-age=31536000): after a prune it would go on offering a
// path whose NAR is gone ("file 'nar/…' does not exist in binary cache").
// They must be revalidated (ETag, 304); NARs, named by their file hash,
// stay immutable.
func TestCacheControlOfMutableKeys(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{})
	p := newPath("mutable")
	e.put(p.narKey(), p.narBody())
	e.put(p.narinfoKey(), p.narinfo())
	e.put(p.hash+".ls", []byte(`{"version":1,"root":{"type":"regular","size":1}}`))
	e.put("debuginfo/0123abcd", []byte(`{"archive":"../`+p.narKey()+`","member":"lib/debug/x.debug"}`))
	for _, key := range []string{p.narinfoKey(), p.hash + ".ls", "debuginfo/0123abcd"} {
		r := e.do("GET", "/"+key, nil)
		wantCode(t, key, r, 200)
		if cc := r.hdr.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("%s: Cache-Control %q, want no-cache (a prune deletes it, a writer replaces it)", key, cc)
		}
	}
	r := e.do("GET", "/"+p.narKey(), nil)
	wantCode(t, "NAR", r, 200)
	if cc := r.hdr.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("NAR Cache-Control %q, want immutable (named by its file hash)", cc)
	}
}
