package nixos_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// tokenIssuer is a minimal OIDC issuer for tests: one RSA key, its JWKS
// served over HTTP, RS256 tokens.
type tokenIssuer struct {
	key  *rsa.PrivateKey
	jwks string
}

func newTokenIssuer(t *testing.T) *tokenIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	body, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return &tokenIssuer{key: key, jwks: srv.URL + "/jwks"}
}

func (is *tokenIssuer) token(t *testing.T, iss, aud, sub string) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "k1", "typ": "JWT"})
	pl, _ := json.Marshal(map[string]any{"iss": iss, "aud": aud, "sub": sub, "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()})
	signing := b64(hdr) + "." + b64(pl)
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, is.key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// TestVirtualHostsMTLSAndOIDC runs what the modules give a cache with two
// virtual hosts on one port — the fleet's mTLS vhost (nginx backend with
// its lease gateway) and CI's OIDC vhost (nginx terminates TLS, kiss serve
// checks the tokens) — in the real nginx with real kiss serves behind it,
// socket-activated on the unix sockets the units name. nginx picks the
// server by SNI and Host; both write into the one cache directory.
func TestVirtualHostsMTLSAndOIDC(t *testing.T) {
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	pki := testenv.PKI(t)
	is := newTokenIssuer(t)
	root := t.TempDir()
	cache, runKiss := filepath.Join(root, "cache"), filepath.Join(root, "run-kiss")
	port := testenv.FreePort(t)
	const iss, aud = "https://token.test", "https://ci.test"
	r := mustEvalConfig(t, nix, fmt.Sprintf(`{
		services.kiss.serve = {
			enable = true; backend = "nginx"; cacheDir = %[1]s; hostName = "localhost";
			listen = [ "127.0.0.1:%[2]d" ];
			sslCertificate = %[3]s; sslCertificateKey = %[4]s; clientCA = %[5]s;
			writers = [ "CN=writer" ];
			virtualHosts.ci = {
				backend = "nginx"; cacheDir = %[1]s; hostName = "ci.test";
				listen = [ "127.0.0.1:%[2]d" ];
				sslCertificate = %[3]s; sslCertificateKey = %[4]s;
				oidc = { issuer = %[6]s; audience = %[7]s; jwksUrl = %[8]s;
					readSubjects = [ "repo:example/*" ]; writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ]; };
			};
		};
	}`, nixString(cache), port, nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile), nixString(pki.CAFile),
		nixString(iss), nixString(aud), nixString(is.jwks)))
	move := strings.NewReplacer("/run/kiss", runKiss)
	applyTmpfiles(t, strs(t, get(t, r.Config, "systemd", "tmpfiles")))
	for _, unit := range []string{"kiss-leases", "kiss-serve-ci"} {
		argv, err := splitExecStart(get(t, r.Config, "systemd", "services", unit, "serviceConfig", "ExecStart").(string), "")
		if err != nil {
			t.Fatal(err)
		}
		sock := move.Replace(strs(t, get(t, r.Config, "systemd", "sockets", unit, "listenStreams"))[0])
		startSocketActivated(t, sock, append([]string{kiss}, argv[1:]...)...)
	}
	testenv.Nginx(t, move.Replace(get(t, r.Config, "nginx", "appendHttpConfig").(string)))
	base := fmt.Sprintf("https://127.0.0.1:%d", port)

	// The CI side: SNI and Host ci.test, no client certificate.
	ci := func(method, path, token, body string, hdr map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "ci.test"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: "ci.test", InsecureSkipVerify: true}, DisableKeepAlives: true}}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	reader := is.token(t, iss, aud, "repo:example/web")
	writer := is.token(t, iss, aud, "repo:example/infra:ref:refs/heads/main")
	lease := `{"version":1,"kind":"writer","nonce":"aa"}`
	inm := map[string]string{"If-None-Match": "*"}

	if code, _ := ci("GET", "/nix-cache-info", "", "", nil); code != 401 {
		t.Errorf("CI vhost without a token: %d, want 401", code)
	}
	if code, body := ci("GET", "/nix-cache-info", reader, "", nil); code != 200 || !strings.Contains(body, "StoreDir: /nix/store") {
		t.Errorf("CI vhost, read token: %d %q", code, body)
	}
	if code, _ := ci("GET", "/nix-cache-info", is.token(t, iss, "https://elsewhere", "repo:example/web"), "", nil); code == 200 {
		t.Error("a token for another audience reads")
	}
	if code, _ := ci("PUT", "/gcroots/.lock/ci.1", reader, lease, inm); code != 403 {
		t.Errorf("CI vhost, read token PUT: %d, want 403", code)
	}
	if code, body := ci("PUT", "/gcroots/.lock/ci.1", writer, lease, inm); code != 201 {
		t.Errorf("CI vhost, write token PUT lease: %d %s", code, body)
	}

	// The fleet side: SNI localhost, client certificates; same directory.
	fleet := func(c *testenv.Cert) client { return newClient("fleet", base, pki.ClientTLS(c)) }
	if code, _, _ := fleet(nil).do(t, "GET", "/nix-cache-info", "", nil); code != 400 {
		t.Errorf("mTLS vhost without a certificate: %d, want 400", code)
	}
	if code, _, body := fleet(ptr(pki.Client("writer"))).do(t, "PUT", "/gcroots/.lock/fleet.1", lease, inm); code != 201 {
		t.Errorf("mTLS writer PUT lease: %d %s", code, body)
	}
	if code, _, _ := fleet(ptr(pki.Client("reader"))).do(t, "PUT", "/gcroots/.lock/r.1", lease, inm); code != 403 {
		t.Errorf("mTLS reader PUT lease: %d, want 403", code)
	}
	for _, f := range []string{"ci.1", "fleet.1"} {
		if _, err := os.Stat(filepath.Join(cache, "gcroots", ".lock", f)); err != nil {
			t.Errorf("lease %s not in the shared cache directory: %v", f, err)
		}
	}
}
