package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

// TestUpstream: a reader's local miss is served from the upstream cache and
// kept; a narinfo is stored only after its NAR (invariant I2); writers see
// the store as it is; upstream 404s stay 404s.
func TestUpstream(t *testing.T) {
	up := newEnv(t, nil, gateway.Config{})
	p := newPath("up")
	up.put(p.narKey(), p.narBody())
	up.put(p.narinfoKey(), p.narinfo())
	local := storage.NewMem(nil)
	e := newEnv(t, local, gateway.Config{Upstream: up.srv.URL})

	r := e.do("GET", "/"+p.narinfoKey(), nil)
	wantCode(t, "narinfo from upstream", r, 200)
	if r.body != string(p.narinfo()) || r.hdr.Get("Content-Type") != "text/x-nix-narinfo" {
		t.Fatalf("upstream narinfo: %q %q", r.body, r.hdr.Get("Content-Type"))
	}
	// mirrored in the background: NAR first, then the narinfo
	deadline := time.Now().Add(10 * time.Second)
	for !e.has(p.narinfoKey()) {
		if time.Now().After(deadline) {
			t.Fatal("upstream narinfo never stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !e.has(p.narKey()) {
		t.Fatal("narinfo stored without its NAR")
	}

	q := newPath("up2")
	up.put(q.narKey(), q.narBody())
	r = e.do("GET", "/"+q.narKey(), nil)
	wantCode(t, "NAR from upstream", r, 200)
	if r.body != string(q.narBody()) {
		t.Fatal("upstream NAR body differs")
	}
	for !e.has(q.narKey()) {
		if time.Now().After(deadline) {
			t.Fatal("upstream NAR never stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h := newPath("head")
	up.put(h.narKey(), h.narBody())
	up.put(h.narinfoKey(), h.narinfo())
	r = e.do("HEAD", "/"+h.narinfoKey(), nil)
	wantCode(t, "HEAD from upstream", r, 200)
	if r.hdr.Get("Content-Length") != fmt.Sprint(len(h.narinfo())) {
		t.Errorf("HEAD Content-Length %q", r.hdr.Get("Content-Length"))
	}
	wantCode(t, "HEAD upstream miss", e.do("HEAD", "/"+newPath("none").narinfoKey(), nil), 404)
	wantCode(t, "upstream miss", e.do("GET", "/"+newPath("none").narinfoKey(), nil), 404)
	wantCode(t, "no upstream for roots", e.do("GET", "/gcroots/x", nil), 404)

	// writers see the local store only (else Nix would skip uploads the
	// narinfo validation then needs)
	w := newEnv(t, storage.NewMem(nil), gateway.Config{Upstream: up.srv.URL, Auth: gateway.Open{}})
	wantCode(t, "writer miss", w.do("GET", "/"+q.narKey(), nil), 404)

	// a truncated upstream body is never stored
	trunc := newRawServer(t, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Length", "1000")
		rw.WriteHeader(200)
		rw.Write([]byte(strings.Repeat("x", 10)))
	})
	te := newEnv(t, storage.NewMem(nil), gateway.Config{Upstream: trunc})
	// the client's response breaks off (how depends on how much of it was
	// buffered); what matters is the store
	if res, err := te.srv.Client().Get(te.srv.URL + "/nar/trunc.nar"); err == nil {
		if b, err := io.ReadAll(res.Body); err == nil && len(b) == 1000 {
			t.Error("a truncated upstream NAR reached the client whole")
		}
		res.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	if te.has("nar/trunc.nar") {
		t.Fatal("truncated upstream NAR stored")
	}
}
