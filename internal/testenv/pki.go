package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Cert is one issued certificate, on disk (PEM) and in memory.
type Cert struct {
	CN       string
	CertFile string
	KeyFile  string
	TLS      tls.Certificate
	X509     *x509.Certificate
}

// PKIEnv is a private certificate authority for mTLS tests, made with
// crypto/x509 (no openssl): a CA, a server certificate for 127.0.0.1 and
// localhost, client certificates by CN, an expired client certificate and
// one from a foreign CA.
type PKIEnv struct {
	t      testing.TB
	Dir    string
	CAFile string // the CA certificate (PEM): ssl_client_certificate, NIX_SSL_CERT_FILE
	CA     *x509.Certificate
	Server Cert // CN=localhost, SAN 127.0.0.1, ::1, localhost
	// Expired is a client certificate for CN=writer signed by the CA whose
	// validity ended an hour ago.
	Expired Cert
	// Foreign is a client certificate for CN=writer signed by another CA.
	Foreign Cert
	// ForeignCAFile is that other CA's certificate.
	ForeignCAFile string

	caKey   *ecdsa.PrivateKey
	mu      sync.Mutex
	clients map[string]Cert
}

// PKI creates a fresh PKI in a temp dir.
func PKI(t testing.TB) *PKIEnv {
	t.Helper()
	p := &PKIEnv{t: t, Dir: t.TempDir(), clients: map[string]Cert{}}
	p.CA, p.caKey = p.newCA("kiss test CA", "ca")
	p.CAFile = filepath.Join(p.Dir, "ca.crt")
	now := time.Now()
	p.Server = p.issue(p.CA, p.caKey, "server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost", Organization: []string{"kiss-test"}},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.Expired = p.issue(p.CA, p.caKey, "expired", clientTemplate("writer", now.Add(-48*time.Hour), now.Add(-time.Hour)))
	fca, fkey := p.newCA("foreign test CA", "foreign-ca")
	p.ForeignCAFile = filepath.Join(p.Dir, "foreign-ca.crt")
	p.Foreign = p.issue(fca, fkey, "foreign", clientTemplate("writer", now.Add(-time.Hour), now.Add(24*time.Hour)))
	return p
}

func clientTemplate(cn string, from, to time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"kiss-test"}},
		NotBefore:   from,
		NotAfter:    to,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// Client returns a valid client certificate with the given CN (made on
// first use, then cached), e.g. "writer" or "reader".
func (p *PKIEnv) Client(cn string) Cert {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[cn]; ok {
		return c
	}
	now := time.Now()
	c := p.issue(p.CA, p.caKey, "client-"+cn, clientTemplate(cn, now.Add(-time.Hour), now.Add(24*time.Hour)))
	p.clients[cn] = c
	return c
}

// ClientSubject issues a valid client certificate whose subject is exactly
// the given RDN sequence (most general first, as encoded), written to
// <file>.crt/.key. It makes subjects pkix.Name cannot express: several CN
// attributes, multi-valued RDNs ("CN=a+CN=b"). Not cached.
func (p *PKIEnv) ClientSubject(file string, subject pkix.RDNSequence) Cert {
	p.t.Helper()
	raw, err := asn1.Marshal(subject)
	if err != nil {
		p.t.Fatal(err)
	}
	now := time.Now()
	tmpl := clientTemplate("", now.Add(-time.Hour), now.Add(24*time.Hour))
	tmpl.RawSubject = raw
	return p.issue(p.CA, p.caKey, file, tmpl)
}

// Pool returns a CertPool holding the CA.
func (p *PKIEnv) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// ServerTLS returns a server TLS config presenting Server and requiring a
// client certificate from the CA.
func (p *PKIEnv) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Server.TLS},
		ClientCAs:    p.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLS returns a client TLS config trusting the CA and presenting c
// (nil: no client certificate).
func (p *PKIEnv) ClientTLS(c *Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: p.Pool(), MinVersion: tls.VersionTLS12}
	if c != nil {
		cfg.Certificates = []tls.Certificate{c.TLS}
	}
	return cfg
}

func (p *PKIEnv) newCA(cn, file string) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(p.t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"kiss-test"}},
		NotBefore:             time.Now().Add(-72 * time.Hour),
		NotAfter:              time.Now().Add(72 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	writePEM(p.t, filepath.Join(p.Dir, file+".crt"), "CERTIFICATE", der)
	return cert, key
}

func (p *PKIEnv) issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, file string, tmpl *x509.Certificate) Cert {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl.SerialNumber = serial(p.t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	c := Cert{CN: tmpl.Subject.CommonName, CertFile: filepath.Join(p.Dir, file+".crt"), KeyFile: filepath.Join(p.Dir, file+".key"), X509: cert}
	writePEM(p.t, c.CertFile, "CERTIFICATE", der)
	writePEM(p.t, c.KeyFile, "PRIVATE KEY", keyDER)
	c.TLS = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
	return c
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
