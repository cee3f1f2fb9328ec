package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/lockproto"
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
	e.waitStored(p.narinfoKey(), deadline, "upstream narinfo")
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
	e.waitStored(q.narKey(), deadline, "upstream NAR")
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

// logSink collects log messages, for a test to wait on one.
type logSink struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logSink) WithGroup(string) slog.Handler      { return l }
func (l *logSink) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// TestUpstreamMirrorDuringPrune: a narinfo mirrored from upstream while a
// prune deletes the same path (narinfo deleted, its old NAR not yet) must
// not be stored — the prune then deletes the NAR, and the store would hold
// a narinfo without its NAR (I2), which every client then fails on and the
// next prune refuses (ErrIntegrity). The mirror is a writer: it stores a
// narinfo only under a writer lease, never while a fresh prune lease
// exists (I5).
func TestUpstreamMirrorDuringPrune(t *testing.T) {
	ctx := context.Background()
	up := newEnv(t, nil, gateway.Config{})
	p := newPath("mirrored")
	up.put(p.narKey(), p.narBody())
	up.put(p.narinfoKey(), p.narinfo())

	local := storage.NewMem(nil)
	logs := &logSink{}
	e := newEnv(t, local, gateway.Config{Upstream: up.srv.URL, Logger: slog.New(logs)})
	// An earlier mirror left both, unrooted: garbage to the pruner.
	e.put(p.narKey(), p.narBody())
	e.put(p.narinfoKey(), p.narinfo())

	// The pruner holds its lease and has deleted the narinfo; the NAR is
	// next.
	lease, err := lockproto.AcquirePrune(ctx, local, lockproto.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Delete(ctx, p.narinfoKey(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A reader asks for the path meanwhile: served from upstream (that is
	// right), mirrored in the background.
	r := e.do("GET", "/"+p.narinfoKey(), nil)
	wantCode(t, "narinfo from upstream during a prune", r, 200)
	deadline := time.Now().Add(5 * time.Second)
	for !e.has(p.narinfoKey()) && !logs.has("mirror") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let a mirror that logged finish
	// The pruner deletes the NAR, as it planned, and is done.
	if err := local.Delete(ctx, p.narKey(), storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if e.has(p.narinfoKey()) && !e.has(p.narKey()) {
		t.Fatalf("the mirror stored %s during the prune: the store now holds it without its NAR %s (I2)", p.narinfoKey(), p.narKey())
	}

	// Once the prune is over, the next miss mirrors it again, NAR first.
	wantCode(t, "narinfo from upstream after the prune", e.do("GET", "/"+p.narinfoKey(), nil), 200)
	e.waitStored(p.narinfoKey(), time.Now().Add(10*time.Second), "upstream narinfo after the prune")
	if !e.has(p.narKey()) {
		t.Fatal("narinfo stored without its NAR after the prune")
	}
	// The mirror's writer lease is gone again.
	for o, err := range local.List(ctx, "gcroots/.lock/") {
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("lease left behind: %s", o.Key)
	}
}
