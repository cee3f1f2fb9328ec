package main

import (
	"strings"
	"testing"
)

// TestServeRefusesUnsafeSetups: mistakes that would expose a cache are
// usage errors (exit 2) before anything listens.
func TestServeRefusesUnsafeSetups(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--store", dir, "--listen", "0.0.0.0:0"}, "refusing plain HTTP"},
		{[]string{"serve", "--store", dir, "--listen", "0.0.0.0:0", "--insecure-http", "--anonymous-writes"}, "only allowed on loopback"},
		{[]string{"serve", "--store", dir, "--writer", "CN=x"}, "--writer needs --client-ca"},
		{[]string{"serve", "--store", dir, "--client-ca", "ca.pem"}, "--client-ca needs --tls-cert"},
		{[]string{"serve", "--store", dir, "--tls-cert", "c.pem"}, "go together"},
		{[]string{"serve", "--store", dir, "--oidc-issuer", "https://i.example", "--oidc-audience", "a"}, "JWKS"},
		{[]string{"serve", "--store", dir, "--oidc-audience", "a", "--oidc-jwks-url", "http://127.0.0.1:1/jwks", "--oidc-write-subject", "ci"}, "an issuer is required"},
		{[]string{"serve", "--store", dir, "--max-upload-size", "lots"}, "bad size"},
		{[]string{"serve", "--store", dir, "--require-signature", "nonsense"}, "--require-signature"},
		{[]string{"serve", "--store", "ftp://x", "--listen", "127.0.0.1:0"}, "unknown scheme"},
		{[]string{"serve", "--store", dir, "extra-arg"}, "no arguments"},
		{[]string{"serve", "--store", dir, "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"}, "refusing plain HTTP for metrics"},
	} {
		code, _, stderr := runKiss(t, tc.args...)
		if code != ExitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("kiss %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, stderr, ExitUsage, tc.want)
		}
	}
}

func TestServeParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "65536": 65536, "64K": 64 << 10, "10M": 10 << 20, "4G": 4 << 30, "4GiB": 4 << 30, "1t": 1 << 40} {
		got, err := serveParseSize(in)
		if err != nil || got != want {
			t.Errorf("serveParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "x", "1P", "99999999999T"} {
		if _, err := serveParseSize(in); err == nil {
			t.Errorf("serveParseSize(%q) accepted", in)
		}
	}
}
