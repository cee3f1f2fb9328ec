package gateway_test

import (
	"crypto/x509/pkix"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
)

// TestDeploymentRules: the security rules of `kiss serve`, one
// authenticator per server, refused combinations wrapping ErrSetup.
func TestDeploymentRules(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir, "ca")
	p.issue("server", pkix.Name{CommonName: "localhost"}, true, time.Now().Add(time.Hour))
	cert, key, ca := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt")
	oidc := gateway.OIDCConfig{Issuer: "https://token.example", Audience: "kiss", JWKSURL: "http://127.0.0.1:1/jwks", WriteSubjects: []string{"ci"}}

	for name, s := range map[string]gateway.Security{
		"cert without key":          {TLSCert: cert},
		"key without cert":          {TLSKey: key},
		"client CA without TLS":     {ClientCA: ca},
		"client CA and OIDC":        {TLSCert: cert, TLSKey: key, ClientCA: ca, OIDC: oidc},
		"anonymous writes and CA":   {TLSCert: cert, TLSKey: key, ClientCA: ca, AnonymousWrites: true},
		"anonymous writes and OIDC": {OIDC: oidc, AnonymousWrites: true},
		"writers without client CA": {Writers: []string{"CN=builder"}},
		"unreadable certificate":    {TLSCert: filepath.Join(dir, "absent.crt"), TLSKey: key},
		"OIDC without JWKS":         {OIDC: gateway.OIDCConfig{Issuer: "https://token.example", Audience: "kiss"}},
		"OIDC without issuer":       {OIDC: gateway.OIDCConfig{Audience: "kiss", JWKSURL: "http://127.0.0.1:1/jwks", WriteSubjects: []string{"ci"}}},
	} {
		if d, err := gateway.NewDeployment(s); !errors.Is(err, gateway.ErrSetup) {
			t.Errorf("%s: %v, %+v; want ErrSetup", name, err, d)
		}
	}

	for name, tc := range map[string]struct {
		s       gateway.Security
		auth    gateway.Authenticator
		withTLS bool
	}{
		"nothing: anyone reads, nobody writes": {gateway.Security{}, gateway.OpenReads{}, false},
		"open reads alone":                     {gateway.Security{OpenReads: true}, gateway.OpenReads{}, false},
		"anonymous writes":                     {gateway.Security{AnonymousWrites: true, OpenReads: true}, gateway.Open{}, false},
		"client certificates":                  {gateway.Security{TLSCert: cert, TLSKey: key, ClientCA: ca, Writers: []string{"CN=b"}}, gateway.ClientCerts{Writers: []string{"CN=b"}}, true},
		"certificates, reads open":             {gateway.Security{TLSCert: cert, TLSKey: key, ClientCA: ca, OpenReads: true}, gateway.OpenReads{Writers: gateway.ClientCerts{}}, true},
		"TLS, no client certificates":          {gateway.Security{TLSCert: cert, TLSKey: key}, gateway.OpenReads{}, true},
	} {
		d, err := gateway.NewDeployment(tc.s)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(d.Auth, tc.auth) || (d.TLS != nil) != tc.withTLS {
			t.Errorf("%s: auth %#v, TLS %v; want %#v, TLS %v", name, d.Auth, d.TLS != nil, tc.auth, tc.withTLS)
		}
	}
	d, err := gateway.NewDeployment(gateway.Security{OIDC: oidc, OpenReads: true})
	if err != nil {
		t.Fatal(err)
	}
	if or, ok := d.Auth.(gateway.OpenReads); !ok || or.Writers == nil {
		t.Errorf("OIDC with open reads: %#v", d.Auth)
	}
}

// TestDeploymentListeners: plain HTTP only on loopback (unless
// --insecure-http), anonymous writes only on loopback whatever else is set,
// metrics in plain HTTP only on loopback.
func TestDeploymentListeners(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir, "ca")
	p.issue("server", pkix.Name{CommonName: "localhost"}, true, time.Now().Add(time.Hour))
	tlsSec := gateway.Security{TLSCert: filepath.Join(dir, "server.crt"), TLSKey: filepath.Join(dir, "server.key")}
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	loop6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 8080}
	public := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 8080}
	anyAddr := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	sock := &net.UnixAddr{Name: "/run/kiss.sock", Net: "unix"}
	for _, tc := range []struct {
		name    string
		s       gateway.Security
		addr    net.Addr
		ok      bool
		metrics bool
	}{
		{"plain on loopback", gateway.Security{}, loop, true, true},
		{"plain on ::1", gateway.Security{}, loop6, true, true},
		{"plain on a unix socket", gateway.Security{}, sock, true, true},
		{"plain on a public address", gateway.Security{}, public, false, false},
		{"plain on 0.0.0.0", gateway.Security{}, anyAddr, false, false},
		{"plain, forced", gateway.Security{InsecureHTTP: true}, public, true, true},
		{"TLS on a public address", tlsSec, public, true, false},
		{"anonymous writes on loopback", gateway.Security{AnonymousWrites: true}, loop, true, true},
		{"anonymous writes, public, forced HTTP", gateway.Security{AnonymousWrites: true, InsecureHTTP: true}, public, false, true},
	} {
		d, err := gateway.NewDeployment(tc.s)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := d.CheckListener(tc.addr); (err == nil) != tc.ok || (err != nil && !errors.Is(err, gateway.ErrSetup)) {
			t.Errorf("%s: CheckListener = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err := d.CheckMetricsListener(tc.addr); (err == nil) != tc.metrics {
			t.Errorf("%s: CheckMetricsListener = %v, want ok %v", tc.name, err, tc.metrics)
		}
	}
}
