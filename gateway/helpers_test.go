package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

// fakePath is a store path with a random (valid nixbase32) hash.
type fakePath struct {
	hash, name string
}

func newPath(name string) fakePath {
	var b [20]byte
	rand.Read(b[:])
	return fakePath{hash: nixbase32.EncodeToString(b[:]), name: name}
}

func (p fakePath) base() string       { return p.hash + "-" + p.name }
func (p fakePath) abs() string        { return "/nix/store/" + p.base() }
func (p fakePath) narinfoKey() string { return p.hash + ".narinfo" }
func (p fakePath) narKey() string     { return "nar/" + p.hash + "0000.nar.zst" }
func (p fakePath) narBody() []byte    { return bytes.Repeat([]byte(p.hash), 100) }
func (p fakePath) marker() []byte     { return []byte(p.abs() + "\n") }
func (p fakePath) narinfo(refs ...fakePath) []byte {
	var rs []string
	for _, r := range refs {
		rs = append(rs, r.base())
	}
	return fmt.Appendf(nil, "StorePath: %s\nURL: %s\nCompression: zstd\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:1kmbzm1dw4jca8fwjdi3dz7pq34pz99f5paydq6cry42lwg8n2bj\nNarSize: 4096\nReferences: %s\n",
		p.abs(), p.narKey(), "0gxb81ndn2bcmhbsvsvzydy6s0ip0b1qmy2dx6c0r0fmi1ki7p28", len(p.narBody()), strings.Join(rs, " "))
}

// env is a gateway over a store, served on 127.0.0.1.
type env struct {
	t   *testing.T
	st  storage.Store
	srv *testServer
	gw  *gateway.Server
}

// testServer is a gateway served by gateway.Serve on a loopback port until
// the test ends.
type testServer struct {
	URL string
	hc  *http.Client
}

// Client is an HTTP client for the server (its own keep-alive pool).
func (ts *testServer) Client() *http.Client { return ts.hc }

func startServer(t testing.TB, gw *gateway.Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gateway.Serve(ctx, ln, gw, nil, time.Second) }()
	ts := &testServer{URL: "http://" + ln.Addr().String(), hc: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(func() {
		ts.hc.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway.Serve: %v", err)
		}
	})
	return ts
}

func newEnv(t *testing.T, st storage.Store, cfg gateway.Config) *env {
	t.Helper()
	if st == nil {
		st = storage.NewMem(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	gw, err := gateway.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, st: st, srv: startServer(t, gw), gw: gw}
}

type resp struct {
	code int
	hdr  http.Header
	body string
}

func (e *env) do(method, path string, body []byte, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{code: res.StatusCode, hdr: res.Header, body: string(b)}
}

func (e *env) put(key string, body []byte) {
	e.t.Helper()
	if _, err := e.st.Put(context.Background(), key, bytes.NewReader(body), storage.PutOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// get reads key straight from the store ("" if absent).
func (e *env) get(key string) string {
	e.t.Helper()
	r, err := e.st.Get(context.Background(), key)
	if err != nil {
		return ""
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) has(key string) bool {
	_, err := e.st.Stat(context.Background(), key)
	return err == nil
}

// waitStored waits until key is in the store (a write the gateway makes in
// the background), failing the test with "<what> never stored" at deadline.
func (e *env) waitStored(key string, deadline time.Time, what string) {
	e.t.Helper()
	for !e.has(key) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s never stored", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantCode(t *testing.T, what string, r resp, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: status %d, want %d (body %q, X-Kiss-Error %q)", what, r.code, code, r.body, r.hdr.Get("X-Kiss-Error"))
	}
}

func newRawServer(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
