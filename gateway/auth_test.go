package gateway_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/storage"
)

// pki is a throw-away CA with helpers to issue certificates.
type pki struct {
	t    *testing.T
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(t *testing.T, dir, name string) *pki {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, ca: ca, key: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

var serial int64 = 100

// issue writes <file>.crt/.key and returns the pair.
func (p *pki) issue(file string, subject pkix.Name, server bool, notAfter time.Time) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: subject,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(p.t, filepath.Join(p.dir, file+".crt"), "CERTIFICATE", der)
	writePEM(p.t, filepath.Join(p.dir, file+".key"), "EC PRIVATE KEY", kder)
	c, err := tls.LoadX509KeyPair(filepath.Join(p.dir, file+".crt"), filepath.Join(p.dir, file+".key"))
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "ca")
	rogue := newPKI(t, dir, "rogue")
	later := time.Now().Add(12 * time.Hour)
	ca.issue("server", pkix.Name{CommonName: "localhost"}, true, later)
	ca.issue("writer", pkix.Name{CommonName: "builder-01", Organization: []string{"Example"}}, false, later)
	ca.issue("writer2", pkix.Name{CommonName: "hydra"}, false, later)
	ca.issue("reader", pkix.Name{CommonName: "laptop"}, false, later)
	ca.issue("expired", pkix.Name{CommonName: "builder-01", Organization: []string{"Example"}}, false, time.Now().Add(-time.Hour))
	rogue.issue("foreign", pkix.Name{CommonName: "builder-01", Organization: []string{"Example"}}, false, later)

	tc, err := gateway.ServerTLS(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	st := storage.NewMem(nil)
	gw, err := gateway.New(st, gateway.Config{
		Auth:   gateway.ClientCerts{Writers: []string{"CN=builder-01,O=Example", "CN=hydra"}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); gateway.Serve(ctx, ln, gw, tc, time.Second) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	base := "https://" + ln.Addr().String()

	client := func(cert string) *httpstore.Client {
		o := httpstore.Options{CAFile: filepath.Join(dir, "ca.crt")}
		if cert != "" {
			o.CertFile, o.KeyFile = filepath.Join(dir, cert+".crt"), filepath.Join(dir, cert+".key")
		}
		c, err := httpstore.Open(base, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cctx := context.Background()
	p := newPath("m")
	body := func() *strings.Reader { return strings.NewReader(string(p.narBody())) }

	// no certificate: handshake completes, HTTP 401
	_, err = client("").Stat(cctx, "nix-cache-info")
	if !errors.Is(err, httpstore.ErrUnauthorized) {
		t.Fatalf("no certificate: %v", err)
	}
	// foreign CA and expired certificate: refused in the handshake. The
	// client is made to send its certificate even though the server's list
	// of acceptable CAs does not name its issuer.
	for _, c := range []string{"foreign", "expired"} {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, c+".crt"), filepath.Join(dir, c+".key"))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:              ca.pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		}}}
		cl, _ := httpstore.Open(base, httpstore.Options{HTTPClient: hc})
		_, err = cl.Stat(cctx, "nix-cache-info")
		if err == nil || !strings.Contains(err.Error(), "tls") {
			t.Fatalf("%s certificate: %v", c, err)
		}
		t.Logf("%s certificate refused: %v", c, err)
		// and with the default client (which does not offer a certificate
		// the server's CA list does not name): 401
		if _, err := client(c).Stat(cctx, "nix-cache-info"); err == nil {
			t.Fatalf("%s certificate accepted", c)
		}
	}
	// reader: reads, cannot write
	if _, err := client("reader").Stat(cctx, "nix-cache-info"); err != nil {
		t.Fatalf("reader read: %v", err)
	}
	if _, err := client("reader").Put(cctx, p.narKey(), body(), storage.PutOptions{}); !errors.Is(err, httpstore.ErrForbidden) {
		t.Fatalf("reader PUT: %v", err)
	}
	if _, err := client("reader").Get(cctx, "gcroots/.lock/prune"); !errors.Is(err, httpstore.ErrForbidden) {
		t.Fatalf("reader lease read: %v", err)
	}
	// writers: exact DN and the CN= shorthand
	if _, err := client("writer").Put(cctx, p.narKey(), body(), storage.PutOptions{}); err != nil {
		t.Fatalf("writer (exact DN) PUT: %v", err)
	}
	if _, err := client("writer2").Put(cctx, "gcroots/web1", strings.NewReader(string(p.marker())), storage.PutOptions{}); err != nil {
		t.Fatalf("writer (CN shorthand) PUT: %v", err)
	}
	// the DN is matched exactly: CN=builder-01 alone is not CN=builder-01,O=Example
	cr := gateway.Credentials{TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{mustParse(t, filepath.Join(dir, "writer.crt"))}}}}
	a, err := gateway.ClientCerts{Writers: []string{"CN=builder-01,O=Other"}}.Authenticate(cctx, cr)
	if err != nil || a.Write || !a.Read || a.Subject != "CN=builder-01,O=Example" {
		t.Fatalf("DN mismatch granted write or wrong subject: %+v %v", a, err)
	}
}

func mustParse(t *testing.T, path string) *x509.Certificate {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// --- OIDC ---------------------------------------------------------------

type issuer struct {
	t    *testing.T
	url  string
	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
	hits int
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{t: t, keys: map[string]*rsa.PrivateKey{}}
	is.url = newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.hits++
		var keys []map[string]string
		for kid, k := range is.keys {
			keys = append(keys, map[string]string{
				"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes()),
			})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	})
	return is
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (is *issuer) addKey(kid string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		is.t.Fatal(err)
	}
	is.mu.Lock()
	is.keys[kid] = k
	is.mu.Unlock()
}

func (is *issuer) token(kid, alg string, claims map[string]any) string {
	hdr, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	pl, _ := json.Marshal(claims)
	signing := b64(hdr) + "." + b64(pl)
	is.mu.Lock()
	k := is.keys[kid]
	is.mu.Unlock()
	switch alg {
	case "none":
		return signing + "."
	case "HS256": // keyed with the public key: the classic confusion attack
		m := hmac.New(sha256.New, []byte(b64(k.N.Bytes())))
		m.Write([]byte(signing))
		return signing + "." + b64(m.Sum(nil))
	}
	return signing + "." + b64(rs256(is.t, k, signing))
}

// rs256 signs a JWT's signing input with key.
func rs256(t *testing.T, key *rsa.PrivateKey, signing string) []byte {
	t.Helper()
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestOIDC(t *testing.T) {
	is := newIssuer(t)
	is.addKey("k1")
	const iss, aud = "https://token.example", "kiss-cache"
	auth, err := gateway.NewOIDC(gateway.OIDCConfig{
		Issuer: iss, Audience: aud, JWKSURL: is.url,
		ReadSubjects:  []string{"repo:org/*"},
		WriteSubjects: []string{"repo:org/app:ref:refs/heads/main"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, gateway.Config{Auth: auth})
	claims := func(sub string, mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": iss, "aud": aud, "sub": sub, "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	writer := is.token("k1", "RS256", claims("repo:org/app:ref:refs/heads/main", nil))
	reader := is.token("k1", "RS256", claims("repo:org/app:pull_request", nil))
	p := newPath("o")
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	wantCode(t, "no token", e.do("GET", "/nix-cache-info", nil), 401)
	wantCode(t, "writer PUT", e.do("PUT", "/"+p.narKey(), p.narBody(), bearer(writer)...), 201)
	wantCode(t, "reader GET", e.do("GET", "/"+p.narKey(), nil, bearer(reader)...), 200)
	wantCode(t, "reader PUT", e.do("PUT", "/"+p.narKey(), p.narBody(), bearer(reader)...), 403)
	outsider := is.token("k1", "RS256", claims("repo:evil/app:ref:refs/heads/main", nil))
	wantCode(t, "unlisted subject", e.do("GET", "/nix-cache-info", nil, bearer(outsider)...), 403)

	bad := map[string]string{
		"expired":               is.token("k1", "RS256", claims("repo:org/app:ref:refs/heads/main", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })),
		"no exp":                is.token("k1", "RS256", claims("repo:org/app:ref:refs/heads/main", func(c map[string]any) { delete(c, "exp") })),
		"wrong audience":        is.token("k1", "RS256", claims("repo:org/app:ref:refs/heads/main", func(c map[string]any) { c["aud"] = "other" })),
		"wrong issuer":          is.token("k1", "RS256", claims("repo:org/app:ref:refs/heads/main", func(c map[string]any) { c["iss"] = "https://evil" })),
		"alg none":              is.token("k1", "none", claims("repo:org/app:ref:refs/heads/main", nil)),
		"HS256 with public key": is.token("k1", "HS256", claims("repo:org/app:ref:refs/heads/main", nil)),
		"tampered":              writer[:len(writer)-4] + "AAAA",
		"garbage":               "not.a.jwt",
	}
	for name, tok := range bad {
		r := e.do("PUT", "/gcroots/x", p.marker(), bearer(tok)...)
		wantCode(t, name, r, 401)
	}
	if e.has("gcroots/x") {
		t.Fatal("a bad token wrote a marker")
	}

	// key rotation: a token with an unknown kid makes the JWKS be fetched again
	is.addKey("k2")
	rotated := is.token("k2", "RS256", claims("repo:org/app:ref:refs/heads/main", nil))
	wantCode(t, "rotated key", e.do("PUT", "/gcroots/y", p.marker(), bearer(rotated)...), 201)

	// the https client store sends the bearer token
	c, err := httpstore.Open(e.srv.URL, httpstore.Options{Bearer: writer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(context.Background(), "gcroots/z", strings.NewReader(string(p.marker())), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatalf("client store with bearer: %v", err)
	}
}

// TestClientCertsCNShorthandNeedsOneCN: the writer shorthand "CN=name"
// matches only a subject with exactly one CN attribute, equal to it. Go's
// Subject.CommonName takes the last CN, so "CN=builder-01,CN=reader" and
// the multi-valued RDN "CN=builder-01+CN=reader" used to pass as the
// writer. nixos/writer_match_test.go checks the same rule in nginx with the
// same certificates.
func TestClientCertsCNShorthandNeedsOneCN(t *testing.T) {
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	o := asn1.ObjectIdentifier{2, 5, 4, 10}
	atv := func(typ asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: typ, Value: v}
	}
	one := func(a ...pkix.AttributeTypeAndValue) pkix.RelativeDistinguishedNameSET { return a }
	for _, c := range []struct {
		name    string
		subject pkix.RDNSequence
		dn      string
		writer  bool
	}{
		{"one CN", pkix.RDNSequence{one(atv(cn, "builder-01"))}, "CN=builder-01", true},
		{"one CN and O", pkix.RDNSequence{one(atv(cn, "builder-01")), one(atv(o, "Example"))}, "O=Example,CN=builder-01", true},
		{"two CNs", pkix.RDNSequence{one(atv(cn, "reader")), one(atv(cn, "builder-01"))}, "CN=builder-01,CN=reader", false},
		{"two CNs, other order", pkix.RDNSequence{one(atv(cn, "builder-01")), one(atv(cn, "reader"))}, "CN=reader,CN=builder-01", false},
		{"multi-valued RDN", pkix.RDNSequence{one(atv(cn, "builder-01"), atv(cn, "reader"))}, "CN=builder-01+CN=reader", false}, // DER sorts the set; OpenSSL prints it reversed
		{"multi-valued RDN with O", pkix.RDNSequence{one(atv(o, "x"), atv(cn, "builder-01"))}, "CN=builder-01+O=x", true},
		{"comma in the CN", pkix.RDNSequence{one(atv(cn, "builder-01,O=x"))}, `CN=builder-01\,O=x`, false},
		{"non-ASCII", pkix.RDNSequence{one(atv(cn, "bäcker"))}, `CN=b\C3\A4cker`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, err := asn1.Marshal(c.subject)
			if err != nil {
				t.Fatal(err)
			}
			// As x509.ParseCertificate fills it: Subject from the encoding.
			var parsed pkix.RDNSequence
			if _, err := asn1.Unmarshal(raw, &parsed); err != nil {
				t.Fatal(err)
			}
			cert := &x509.Certificate{RawSubject: raw}
			cert.Subject.FillFromRDNSequence(&parsed)
			cr := gateway.Credentials{TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
			a, err := gateway.ClientCerts{Writers: []string{"CN=builder-01"}}.Authenticate(context.Background(), cr)
			if err != nil {
				t.Fatal(err)
			}
			if a.Subject != c.dn || a.Write != c.writer {
				t.Errorf("subject %q write %v, want %q %v", a.Subject, a.Write, c.dn, c.writer)
			}
		})
	}
}
