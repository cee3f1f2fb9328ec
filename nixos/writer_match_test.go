package nixos_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/internal/testenv"
)

var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
)

// rdns builds an RDN sequence, most general first (as encoded), from RDNs
// given as "TYPE=value" attributes; several attributes in one argument,
// separated by "+", make a multi-valued RDN.
func rdns(t *testing.T, rdn ...string) pkix.RDNSequence {
	t.Helper()
	types := map[string]asn1.ObjectIdentifier{"CN": oidCN, "O": oidO, "OU": oidOU}
	var seq pkix.RDNSequence
	for _, r := range rdn {
		var set pkix.RelativeDistinguishedNameSET
		for _, atv := range strings.Split(r, "+") {
			k, v, _ := strings.Cut(atv, "=")
			oid, ok := types[k]
			if !ok {
				t.Fatalf("rdns: unknown type %q", k)
			}
			set = append(set, pkix.AttributeTypeAndValue{Type: oid, Value: v})
		}
		seq = append(seq, set)
	}
	return seq
}

// writerCase is one client certificate and whether it may write when the
// writers are writerMatchWriters.
type writerCase struct {
	name    string
	subject []string // RDNs, most general first (encoding order)
	writer  bool
}

// The writer list both sides are configured with: a CN shorthand and a
// full DN.
var writerMatchWriters = []string{"CN=builder-01", "CN=hydra,O=Example", `CN=ci\,runner`, `CN=b\C3\A4cker-02`}

var writerMatchCases = []writerCase{
	{"lone CN", []string{"CN=builder-01"}, true},
	{"CN with O after it", []string{"O=kiss-test", "CN=builder-01"}, true},
	{"CN not the most specific RDN", []string{"CN=builder-01", "O=kiss-test"}, true},
	{"two CN attributes, writer first", []string{"CN=reader", "CN=builder-01"}, false},
	{"two CN attributes, writer last", []string{"CN=builder-01", "CN=reader"}, false},
	{"multi-valued RDN", []string{"CN=builder-01+CN=reader"}, false},
	{"multi-valued RDN, other order", []string{"CN=reader+CN=builder-01"}, false},
	{"multi-valued RDN with O", []string{"O=kiss-test+CN=builder-01"}, true},
	{"two CNs in separate places", []string{"CN=builder-01", "O=x", "CN=builder-01"}, false},
	{"longer CN", []string{"CN=builder-01x"}, false},
	{"CN with an escaped comma", []string{"CN=builder-01,O=Example"}, false},
	{"no CN", []string{"O=builder-01"}, false},
	{"OU spelled like the CN", []string{"OU=CN=builder-01"}, false},
	{"exact full DN", []string{"O=Example", "CN=hydra"}, true},
	{"full DN writer's CN alone", []string{"CN=hydra"}, false},
	{"full DN with one more RDN", []string{"O=Extra", "O=Example", "CN=hydra"}, false},
	{"full DN with a second CN", []string{"O=Example", "CN=hydra", "CN=reader"}, false},
	{"escaped comma in the CN", []string{"CN=ci,runner"}, true},
	{"escaped comma in the CN, two CNs", []string{"CN=x", "CN=ci,runner"}, false},
	{"what the escape stands for, unescaped", []string{"O=runner", "CN=ci"}, false},
	{"non-ASCII CN", []string{"O=kiss-test", "CN=bäcker-01"}, false},
	{"non-ASCII CN, writer", []string{"O=kiss-test", "CN=bäcker-02"}, true},
}

// TestWriterMatchGoAndNginxAgree issues one client certificate per case and
// asks both writer checks about the SAME certificate files: kiss serve's
// (gateway.ClientCerts, what `kiss serve --writer` uses) and the real nginx
// running the config the NixOS module renders for the nginx backend. Both
// must allow exactly the expected writers, and nginx's $ssl_client_s_dn must
// be the DN kiss logs and matches full-DN writers against.
func TestWriterMatchGoAndNginxAgree(t *testing.T) {
	nix := testenv.Nix(t)
	pki := testenv.PKI(t)
	cache := t.TempDir()
	port := testenv.FreePort(t)
	var ws []string
	for _, w := range writerMatchWriters {
		ws = append(ws, nixString(w))
	}
	conf, err := renderNginx(t, nix, fmt.Sprintf(`{
		name = "match"; listen = [ "127.0.0.1:%d" ]; serverName = "localhost";
		cacheDir = %s; sslCertificate = %s; sslCertificateKey = %s; clientCA = %s;
		writers = [ %s ];
		extraConfig = ''
		  location = /whoami { return 200 "$ssl_client_s_dn"; }
		'';
	}`, port, nixString(cache), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile),
		nixString(pki.CAFile), strings.Join(ws, " ")))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Nginx(t, conf)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	auth := gateway.ClientCerts{Writers: writerMatchWriters}

	for i, c := range writerMatchCases {
		t.Run(c.name, func(t *testing.T) {
			cert := pki.ClientSubject(fmt.Sprintf("case%d", i), rdns(t, c.subject...))
			a, err := auth.Authenticate(context.Background(), gateway.Credentials{
				TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.X509}}}})
			if err != nil {
				t.Fatalf("gateway: %v", err)
			}
			cl := newClient(c.name, base, pki.ClientTLS(&cert))
			code, _, dn := cl.do(t, "GET", "/whoami", "", nil)
			if code != 200 {
				t.Fatalf("nginx GET /whoami: %d", code)
			}
			if dn != a.Subject {
				t.Errorf("nginx $ssl_client_s_dn %q, kiss SubjectDN %q", dn, a.Subject)
			}
			code, _, _ = cl.do(t, "PUT", fmt.Sprintf("/nar/case%d.nar", i), "x", nil)
			nginxWriter := code == 201
			if code != 201 && code != 403 {
				t.Errorf("nginx PUT: %d, want 201 or 403", code)
			}
			if a.Write != c.writer || nginxWriter != c.writer {
				t.Errorf("subject %q: kiss writer=%v, nginx writer=%v (PUT %d), want %v", dn, a.Write, nginxWriter, code, c.writer)
			}
		})
	}
}
