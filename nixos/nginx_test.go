package nixos_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// nixString renders a Go string as a Nix string literal.
func nixString(s string) string {
	// JSON string escapes are valid Nix escapes for these inputs, except
	// \u…, which SetEscapeHTML(false) avoids for & < >.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.ReplaceAll(strings.TrimSuffix(b.String(), "\n"), "${", `\${`)
}

// renderNginx evaluates nixos/nginx-render.nix with args (a Nix expression
// yielding the argument set) through the real `nix eval`, exactly as the
// docs tell users to.
func renderNginx(t *testing.T, nix *testenv.NixEnv, args string) (string, error) {
	t.Helper()
	render := filepath.Join(testenv.ModuleRoot(), "nixos", "nginx-render.nix")
	return nix.Run("nix", "eval", "--raw", "--impure", "--expr",
		fmt.Sprintf("(import %s (%s)).httpConfig", render, args))
}

type client struct {
	name string
	hc   *http.Client
	base string
}

func (c client) do(t *testing.T, method, path, body string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", c.name, method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func newClient(name, base string, cfg *tls.Config) client {
	return client{name: name, base: base, hc: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
	}}
}

func fileContent(t *testing.T, path string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

// TestNginxRenderedConfigServesMTLS renders the nginx backend's config with
// writers and a fallback upstream, runs the real nginx on it and checks the
// access model the original kiss-cache VM test checks: no certificate →
// 400, foreign CA → 400, readers read but cannot write, writers PUT NARs
// and markers, nothing can DELETE cache objects, lease endpoints refuse
// (DAV has no conditional writes), dotfiles are hidden, and a miss is
// fetched from the fallback upstream and stored.
func TestNginxRenderedConfigServesMTLS(t *testing.T) {
	nix := testenv.Nix(t)
	pki := testenv.PKI(t)
	cache := t.TempDir()
	for _, d := range []string{".tmp", "nar", "gcroots"} {
		if err := os.MkdirAll(filepath.Join(cache, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const hashA = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
	narinfo := "StorePath: /nix/store/" + hashA + "-a\nURL: nar/a.nar\n"
	if err := os.WriteFile(filepath.Join(cache, hashA+".narinfo"), []byte(narinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, ".tmp", "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The fallback upstream: a plain HTTP cache that knows one extra narinfo.
	const hashUp = "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b"
	var upMu sync.Mutex
	var upHits []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upMu.Lock()
		upHits = append(upHits, r.Method+" "+r.URL.Path+" host="+r.Host)
		upMu.Unlock()
		if r.URL.Path == "/"+hashUp+".narinfo" {
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
			fmt.Fprintf(w, "StorePath: /nix/store/%s-up\n", hashUp)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(upstream.Close)

	port := testenv.FreePort(t)
	writerDN := "CN=writer,O=kiss-test"
	conf, err := renderNginx(t, nix, fmt.Sprintf(`{
		name = "test";
		listen = [ "127.0.0.1:%d" ];
		serverName = "localhost";
		cacheDir = %s;
		sslCertificate = %s;
		sslCertificateKey = %s;
		clientCA = %s;
		writers = [ %s ];
		priority = 41;
		resolvers = [ "127.0.0.1" ];
		extraConfig = ''
		  location = /kiss-extra {
		    return 200 "extra";
		  }
		'';
		fallbackCache = %s; }`,
		port, nixString(cache), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile),
		nixString(pki.CAFile), nixString(writerDN), nixString(upstream.URL+"/ignored/path")))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	testenv.Nginx(t, conf)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)

	anon := newClient("anonymous", base, pki.ClientTLS(nil))
	reader := newClient("reader", base, pki.ClientTLS(ptr(pki.Client("reader"))))
	writer := newClient("writer", base, pki.ClientTLS(ptr(pki.Client("writer"))))
	foreign := newClient("foreign", base, pki.ClientTLS(&pki.Foreign))
	expired := newClient("expired", base, pki.ClientTLS(&pki.Expired))

	t.Run("no certificate is 400", func(t *testing.T) {
		if code, _, _ := anon.do(t, "GET", "/nix-cache-info", "", nil); code != 400 {
			t.Fatalf("GET without cert: %d, want 400", code)
		}
	})
	t.Run("foreign or expired certificate is 400", func(t *testing.T) {
		for _, c := range []client{foreign, expired} {
			if code, _, _ := c.do(t, "GET", "/nix-cache-info", "", nil); code != 400 {
				t.Errorf("%s: GET: %d, want 400", c.name, code)
			}
		}
	})
	t.Run("nix-cache-info", func(t *testing.T) {
		code, h, body := reader.do(t, "GET", "/nix-cache-info", "", nil)
		want := "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"
		if code != 200 || body != want {
			t.Fatalf("GET /nix-cache-info: %d %q, want 200 %q", code, body, want)
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("content type %q", ct)
		}
	})
	t.Run("reader reads narinfo", func(t *testing.T) {
		code, h, body := reader.do(t, "GET", "/"+hashA+".narinfo", "", nil)
		if code != 200 || body != narinfo {
			t.Fatalf("GET narinfo: %d %q", code, body)
		}
		if ct := h.Get("Content-Type"); ct != "text/x-nix-narinfo" {
			t.Errorf("narinfo content type %q", ct)
		}
		// A prune deletes a narinfo and a writer may put it again: a
		// cache in front must revalidate it (as kiss serve says).
		if cc := strings.Join(h.Values("Cache-Control"), ","); cc != "no-cache" {
			t.Errorf("narinfo Cache-Control %q, want no-cache", cc)
		}
	})
	t.Run("reader cannot write", func(t *testing.T) {
		for _, p := range []string{"/nar/r.nar", "/" + hashUp + ".narinfo", "/gcroots/r", "/nix-cache-info"} {
			if code, _, _ := reader.do(t, "PUT", p, "data\n", nil); code != 403 {
				t.Errorf("reader PUT %s: %d, want 403", p, code)
			}
		}
		if code, _, _ := reader.do(t, "DELETE", "/"+hashA+".narinfo", "", nil); code != 403 {
			t.Errorf("reader DELETE narinfo: %d, want 403", code)
		}
		if _, ok := fileContent(t, filepath.Join(cache, "nar", "r.nar")); ok {
			t.Error("reader's PUT created nar/r.nar")
		}
		if _, ok := fileContent(t, filepath.Join(cache, hashA+".narinfo")); !ok {
			t.Error("reader's DELETE removed the narinfo")
		}
	})
	t.Run("writer uploads", func(t *testing.T) {
		if code, _, _ := writer.do(t, "PUT", "/nar/deep/w.nar", "nar bytes", nil); code != 201 {
			t.Fatalf("writer PUT new NAR: %d, want 201", code)
		}
		if got, _ := fileContent(t, filepath.Join(cache, "nar", "deep", "w.nar")); got != "nar bytes" {
			t.Fatalf("stored NAR %q", got)
		}
		if code, _, _ := writer.do(t, "PUT", "/nar/deep/w.nar", "nar bytes 2", nil); code != 204 {
			t.Fatalf("writer PUT existing NAR: %d, want 204", code)
		}
		// A NAR is named by its file hash: it never changes.
		if code, h, _ := writer.do(t, "GET", "/nar/deep/w.nar", "", nil); code != 200 || strings.Join(h.Values("Cache-Control"), ",") != "public, max-age=31536000, immutable" {
			t.Errorf("GET NAR: %d, Cache-Control %q, want 200 and immutable", code, h.Values("Cache-Control"))
		}
		// Cache objects are never deleted over HTTP (the pruner does that).
		if code, _, _ := writer.do(t, "DELETE", "/"+hashA+".narinfo", "", nil); code != 405 {
			t.Errorf("writer DELETE narinfo: %d, want 405", code)
		}
		if _, ok := fileContent(t, filepath.Join(cache, hashA+".narinfo")); !ok {
			t.Error("writer DELETE removed the narinfo")
		}
	})
	t.Run("markers", func(t *testing.T) {
		const sp = "/nix/store/" + hashA + "-a\n"
		if code, _, _ := writer.do(t, "PUT", "/gcroots/web1", sp, nil); code != 201 {
			t.Fatalf("writer PUT marker: %d", code)
		}
		if got, _ := fileContent(t, filepath.Join(cache, "gcroots", "web1")); got != sp {
			t.Fatalf("marker content %q", got)
		}
		code, h, body := reader.do(t, "GET", "/gcroots/web1", "", nil)
		if code != 200 || body != sp {
			t.Fatalf("reader GET marker: %d %q", code, body)
		}
		if cc := strings.Join(h.Values("Cache-Control"), ","); !strings.Contains(cc, "no-store") || strings.Contains(cc, "immutable") {
			t.Errorf("marker Cache-Control %q, want no-store only", cc)
		}
		if code, _, _ := reader.do(t, "DELETE", "/gcroots/web1", "", nil); code != 403 {
			t.Errorf("reader DELETE marker: %d, want 403", code)
		}
		if code, _, _ := writer.do(t, "PUT", "/gcroots/big", strings.Repeat("x", 8<<10), nil); code != 413 {
			t.Errorf("writer PUT 8 KiB marker: %d, want 413", code)
		}
		// nginx normalises the path: this DELETE targets /x.narinfo under /,
		// where DELETE does not exist.
		if code, _, _ := writer.do(t, "DELETE", "/gcroots/../"+hashA+".narinfo", "", nil); code < 400 {
			t.Errorf("DELETE through /gcroots/../: %d", code)
		}
		if _, ok := fileContent(t, filepath.Join(cache, hashA+".narinfo")); !ok {
			t.Error("DELETE escaped gcroots/")
		}
		if code, _, _ := writer.do(t, "DELETE", "/gcroots/web1", "", nil); code != 204 {
			t.Errorf("writer DELETE marker: %d, want 204", code)
		}
		if _, ok := fileContent(t, filepath.Join(cache, "gcroots", "web1")); ok {
			t.Error("marker still present after DELETE")
		}
	})
	t.Run("lease endpoints refuse without gcrootsProxy", func(t *testing.T) {
		code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/job.1", "{}", map[string]string{"If-None-Match": "*"})
		if code != 403 {
			t.Errorf("writer PUT lease: %d, want 403", code)
		}
		if _, err := os.Stat(filepath.Join(cache, "gcroots", ".lock")); !os.IsNotExist(err) {
			t.Errorf("lease dir created: %v", err)
		}
	})
	t.Run("dotfiles hidden", func(t *testing.T) {
		if code, _, _ := reader.do(t, "GET", "/.tmp/secret", "", nil); code != 404 {
			t.Errorf("GET /.tmp/secret: %d, want 404", code)
		}
		if code, _, _ := writer.do(t, "PUT", "/.kiss/memo", "x", nil); code != 404 {
			t.Errorf("writer PUT /.kiss/memo: %d, want 404", code)
		}
		if _, err := os.Stat(filepath.Join(cache, ".kiss")); !os.IsNotExist(err) {
			t.Errorf(".kiss created: %v", err)
		}
	})
	t.Run("extraConfig is part of the server", func(t *testing.T) {
		if code, _, body := reader.do(t, "GET", "/kiss-extra", "", nil); code != 200 || body != "extra" {
			t.Errorf("GET /kiss-extra: %d %q", code, body)
		}
	})
	t.Run("fallback fetches and stores a miss", func(t *testing.T) {
		code, _, body := reader.do(t, "GET", "/"+hashUp+".narinfo", "", nil)
		if code != 200 || !strings.Contains(body, hashUp) {
			t.Fatalf("GET miss via fallback: %d %q", code, body)
		}
		got, ok := fileContent(t, filepath.Join(cache, hashUp+".narinfo"))
		if !ok || got != body {
			t.Fatalf("fallback hit not stored: %v %q", ok, got)
		}
		if code, _, _ := reader.do(t, "GET", "/ffffffffffffffffffffffffffffffff.narinfo", "", nil); code != 404 {
			t.Errorf("miss upstream too: %d, want 404", code)
		}
		if _, ok := fileContent(t, filepath.Join(cache, "ffffffffffffffffffffffffffffffff.narinfo")); ok {
			t.Error("upstream 404 was stored")
		}
		upMu.Lock()
		defer upMu.Unlock()
		host := strings.TrimPrefix(upstream.URL, "http://")
		want := "GET /" + hashUp + ".narinfo host=" + host
		if len(upHits) == 0 || upHits[0] != want {
			t.Errorf("upstream saw %q, want first %q", upHits, want)
		}
	})
}

// TestNginxRenderedConfigProxiesGcroots checks the gcrootsProxy variant:
// markers and leases go to a kiss serve behind nginx, with conditional
// headers and the client DN passed on, and only after nginx's writer check.
func TestNginxRenderedConfigProxiesGcroots(t *testing.T) {
	nix := testenv.Nix(t)
	pki := testenv.PKI(t)
	cache := t.TempDir()
	type seen struct{ method, path, inm, dn string }
	var mu sync.Mutex
	var got []seen
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Get("If-None-Match"), r.Header.Get("X-Kiss-Client-DN")})
		mu.Unlock()
		if r.Header.Get("If-None-Match") == "*" && r.URL.Path == "/gcroots/.lock/taken" {
			w.WriteHeader(http.StatusPreconditionFailed)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(backend.Close)
	port := testenv.FreePort(t)
	conf, err := renderNginx(t, nix, fmt.Sprintf(`{
		listen = [ "127.0.0.1:%d" ];
		cacheDir = %s;
		sslCertificate = %s;
		sslCertificateKey = %s;
		clientCA = %s;
		writers = [ "CN=writer,O=kiss-test" ];
		gcrootsProxy = %s; }`,
		port, nixString(cache), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile),
		nixString(pki.CAFile), nixString(backend.URL)))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	testenv.Nginx(t, conf)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	reader := newClient("reader", base, pki.ClientTLS(ptr(pki.Client("reader"))))
	writer := newClient("writer", base, pki.ClientTLS(ptr(pki.Client("writer"))))

	if code, _, _ := reader.do(t, "PUT", "/gcroots/.lock/r.1", "{}", map[string]string{"If-None-Match": "*"}); code != 403 {
		t.Errorf("reader PUT lease: %d, want 403", code)
	}
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/w.1", "{}", map[string]string{"If-None-Match": "*"}); code != 201 {
		t.Errorf("writer PUT lease: %d, want 201 from backend", code)
	}
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/taken", "{}", map[string]string{"If-None-Match": "*"}); code != 412 {
		t.Errorf("writer PUT existing lease: %d, want the backend's 412", code)
	}
	if code, _, _ := reader.do(t, "GET", "/gcroots/web1", "", nil); code != 201 {
		t.Errorf("reader GET marker: %d, want the backend's answer", code)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []seen{
		{"PUT", "/gcroots/.lock/w.1", "*", "CN=writer,O=kiss-test"},
		{"PUT", "/gcroots/.lock/taken", "*", "CN=writer,O=kiss-test"},
		{"GET", "/gcroots/web1", "", "CN=reader,O=kiss-test"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("backend saw\n %v\nwant\n %v", got, want)
	}
}

// startNginxLeaseGateway runs the nginx backend with its lease gateway
// as services.kiss.serve deploys it: kiss serve --anonymous-writes,
// socket-activated on a unix socket, behind the rendered nginx config for
// cache with one writer DN. It returns the https base URL.
// startSocketActivated starts argv as kiss-leases.socket and the like
// start it: systemd binds the unix socket at path and hands it over as fd 3
// (LISTEN_FDS=1, LISTEN_PID = the server's pid).
func startSocketActivated(t *testing.T, path string, argv ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // the duplicate in lnFile keeps the socket open
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`}, argv...)...)
	cmd.ExtraFiles = []*os.File{lnFile}
	testenv.StartProcess(t, filepath.Base(argv[0]), cmd)
	lnFile.Close()
}

func startNginxLeaseGateway(t *testing.T, nix *testenv.NixEnv, pki *testenv.PKIEnv, cache, writer string) string {
	t.Helper()
	kiss := testenv.KissBinary(t)
	if err := os.MkdirAll(filepath.Join(cache, ".tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "leases.sock")
	startSocketActivated(t, sock, kiss, "serve", "--store", "file://"+cache, "--anonymous-writes")
	gcrootsProxy := "http://unix:" + sock + ":"

	port := testenv.FreePort(t)
	conf, err := renderNginx(t, nix, fmt.Sprintf(`{
		listen = [ "127.0.0.1:%d" ];
		cacheDir = %s;
		sslCertificate = %s;
		sslCertificateKey = %s;
		clientCA = %s;
		writers = [ %s ];
		gcrootsProxy = %s; }`,
		port, nixString(cache), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile),
		nixString(pki.CAFile), nixString(writer), nixString(gcrootsProxy)))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	testenv.Nginx(t, conf)
	return fmt.Sprintf("https://127.0.0.1:%d", port)
}

// TestNginxLeasesThroughKissServe runs the recommended nginx deployment
// for remote writers (services.kiss.serve.leaseGateway): nginx (mTLS,
// writer ACL) proxying gcroots/ to a real `kiss serve --anonymous-writes`,
// socket-activated on a unix socket, over the same directory. The
// lease protocol's conditional writes then work through nginx: create-if-
// absent (201, then 412), refresh by ETag, 503 for new writers while a
// prune lease is fresh, and nginx's writer check before any of it. Writers
// are given in the lone-CN form, which must match CN=w.1 but not CN=wx1.
func TestNginxLeasesThroughKissServe(t *testing.T) {
	nix := testenv.Nix(t)
	pki := testenv.PKI(t)
	cache := t.TempDir()
	base := startNginxLeaseGateway(t, nix, pki, cache, "CN=w.1")
	writer := newClient("writer", base, pki.ClientTLS(ptr(pki.Client("w.1"))))
	lookalike := newClient("lookalike", base, pki.ClientTLS(ptr(pki.Client("wx1"))))

	lease := `{"version":1,"kind":"writer","nonce":"aa"}`
	inm := map[string]string{"If-None-Match": "*"}
	if code, _, body := lookalike.do(t, "PUT", "/gcroots/.lock/job.1", lease, inm); code != 403 {
		t.Fatalf("CN=wx1 PUT lease: %d %s, want 403 (CN=w.1 is not a pattern)", code, body)
	}
	code, h, body := writer.do(t, "PUT", "/gcroots/.lock/job.1", lease, inm)
	if code != 201 {
		t.Fatalf("writer create lease: %d %s", code, body)
	}
	etag := h.Get("ETag")
	if got, ok := fileContent(t, filepath.Join(cache, "gcroots", ".lock", "job.1")); !ok || got != lease {
		t.Fatalf("lease on disk: %v %q", ok, got)
	}
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/job.1", lease, inm); code != 412 {
		t.Errorf("second create: %d, want 412", code)
	}
	code, h, _ = writer.do(t, "PUT", "/gcroots/.lock/job.1", lease, map[string]string{"If-Match": etag})
	if code != 201 || h.Get("ETag") == "" {
		t.Errorf("refresh by ETag: %d", code)
	}
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/job.1", lease, map[string]string{"If-Match": etag}); code != 412 {
		t.Errorf("refresh with the old ETag: %d, want 412", code)
	}
	prune := `{"version":1,"kind":"prune","nonce":"bb","ttl":"10m0s"}`
	if code, _, body := writer.do(t, "PUT", "/gcroots/.lock/prune", prune, inm); code != 201 {
		t.Fatalf("prune lease: %d %s", code, body)
	}
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/job.2", lease, inm); code != 503 {
		t.Errorf("new writer during prune: %d, want 503", code)
	}
	if _, ok := fileContent(t, filepath.Join(cache, "gcroots", ".lock", "job.2")); ok {
		t.Error("refused lease was stored")
	}
	code, _, body = writer.do(t, "GET", "/gcroots/.lock/?list=1", "", nil)
	if code != 200 || !strings.Contains(body, `"key":"gcroots/.lock/prune"`) || !strings.Contains(body, `"key":"gcroots/.lock/job.1"`) {
		t.Errorf("lease listing through nginx: %d %q", code, body)
	}
	if code, _, body := writer.do(t, "GET", "/?list=1", "", nil); code != 200 || !strings.Contains(body, `"key":"gcroots/.lock/job.1"`) {
		t.Errorf("writer cache listing through nginx: %d %q", code, body)
	}

	// A reader (valid certificate, not a writer) gets what kiss serve gives
	// it: leases and the cache listing are writers' business, even to GET
	// (docs/gateway.md). The lease gateway behind nginx runs with
	// --anonymous-writes, so nginx must refuse these before proxying; it
	// used to check writers only for methods other than GET and HEAD.
	reader := newClient("reader", base, pki.ClientTLS(ptr(pki.Client("reader"))))
	for _, p := range []string{"/gcroots/.lock/job.1", "/gcroots/.lock/prune", "/gcroots/.lock/?list=1", "/gcroots/.lock?list=1",
		"/gcroots/%2Elock/job.1", "/gcroots//.lock/job.1", "/?list=1", "/?list", "/?%6Cist=1", "/?kiss=info&list=1"} {
		if code, _, body := reader.do(t, "GET", p, "", nil); code != 403 {
			t.Errorf("reader GET %s: %d %.120q, want 403", p, code, body)
		}
	}
	// What readers use still works: capabilities, markers.
	if code, _, body := reader.do(t, "GET", "/?kiss=info", "", nil); code != 200 {
		t.Errorf("reader GET /?kiss=info: %d %q", code, body)
	}
	if code, _, body := reader.do(t, "GET", "/gcroots/?list=1", "", nil); code != 200 {
		t.Errorf("reader GET /gcroots/?list=1: %d %q", code, body)
	}
}

// TestNginxRenderRefusesInjection checks that values which would change the
// meaning of the config are refused at evaluation time, not rendered.
func TestNginxRenderRefusesInjection(t *testing.T) {
	nix := testenv.Nix(t)
	common := `{ cacheDir = "/srv/c"; sslCertificate = "/c"; sslCertificateKey = "/k"; clientCA = "/ca"; } // `
	for name, extra := range map[string]string{
		"server name with ;":   `{ serverName = "x; root /etc"; }`,
		"cache dir with space": `{ cacheDir = "/srv/c d"; }`,
		"regex writer":         `{ writers = [ "~.*" ]; }`,
		"writer with newline":  `{ writers = [ "CN=a\nb" ]; }`,
		"bad name":             `{ name = "a-b"; }`,
		"fallback not http":    `{ fallbackCache = "ftp://x"; }`,
	} {
		t.Run(name, func(t *testing.T) {
			out, err := renderNginx(t, nix, common+extra)
			if err == nil {
				t.Fatalf("rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), "nginx-render:") {
				t.Fatalf("failed, but not with the renderer's message: %v", err)
			}
		})
	}
	// The happy path renders, with a quoted DN that contains a quote, and a
	// CN shorthand whose "." is no regex wildcard ("CN=w.1" must not match
	// "CN=wx1"; TestWriterMatchGoAndNginxAgree runs the regex in nginx).
	out, err := renderNginx(t, nix, common+`{ writers = [ "CN=a\\\"b,O=x" "CN=w.1" "CN=$host,O=x" ]; }`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"CN=a\\\"b,O=x" 1;`) || !strings.Contains(out, `CN\\=w\\.1(?:[,+]`) || !strings.Contains(out, `"CN=$host,O=x" 1;`) {
		t.Errorf("DN not escaped:\n%s", out)
	}
}

func ptr[T any](v T) *T { return &v }
