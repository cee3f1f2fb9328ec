package gateway_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
)

// forge signs claims with a key the issuer never published, under kid.
func forge(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"})
	pl, _ := json.Marshal(claims)
	signing := b64(hdr) + "." + b64(pl)
	return signing + "." + b64(rs256(t, key, signing))
}

// Issue 11 item 5: forged tokens — an unknown kid, or a known kid with a
// bad signature — must not each cost a JWKS fetch (30 forged requests made
// 30 fetches). Fetches for unknown kids are rate-limited; a bad signature
// under a known kid never refetches (a kid's key does not change).
func TestOIDCForgedTokensDoNotFloodJWKS(t *testing.T) {
	is := newIssuer(t)
	is.addKey("k1")
	const iss, aud = "https://token.example", "kiss-cache"
	auth, err := gateway.NewOIDC(gateway.OIDCConfig{
		Issuer: iss, Audience: aud, JWKSURL: is.url,
		WriteSubjects: []string{"repo:org/*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, gateway.Config{Auth: auth})
	claims := map[string]any{"iss": iss, "aud": aud, "sub": "repo:org/app", "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
	good := is.token("k1", "RS256", claims)
	wantCode(t, "genuine token", e.do("GET", "/nix-cache-info", nil, "Authorization", "Bearer "+good), 200)
	is.mu.Lock()
	before := is.hits
	is.mu.Unlock()

	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		kid := "k1" // a known kid, a signature by another key
		if i%2 == 0 {
			kid = fmt.Sprintf("forged-%d", i) // a kid the issuer never had
		}
		r := e.do("GET", "/nix-cache-info", nil, "Authorization", "Bearer "+forge(t, attacker, kid, claims))
		wantCode(t, "forged token "+kid, r, 401)
	}
	is.mu.Lock()
	fetches := is.hits - before
	is.mu.Unlock()
	t.Logf("JWKS fetches caused by 30 forged tokens: %d", fetches)
	if fetches > 1 {
		t.Fatalf("30 forged tokens caused %d JWKS fetches, want at most 1 (rate-limited)", fetches)
	}
	// The genuine token still passes, from the cached keys.
	wantCode(t, "genuine token after the forgeries", e.do("GET", "/nix-cache-info", nil, "Authorization", "Bearer "+good), 200)
}

// An OIDC setup without an issuer skipped the iss check (go-oidc's
// SkipIssuerCheck), so any issuer whose tokens the JWKS verifies could
// write: every tenant of a shared, multi-tenant key set, or any other
// service signing with the same keys. The issuer is now required, as the
// audience is.
func TestOIDCRequiresIssuer(t *testing.T) {
	is := newIssuer(t)
	is.addKey("k1")
	cfg := gateway.OIDCConfig{Audience: "kiss-cache", JWKSURL: is.url, WriteSubjects: []string{"repo:org/*"}}
	if auth, err := gateway.NewOIDC(cfg); err == nil {
		e := newEnv(t, nil, gateway.Config{Auth: auth})
		tok := is.token("k1", "RS256", map[string]any{
			"iss": "https://other-tenant.example", "aud": "kiss-cache", "sub": "repo:org/app",
			"exp": time.Now().Add(5 * time.Minute).Unix(),
		})
		p := newPath("iss")
		r := e.do("PUT", "/gcroots/x", p.marker(), "Authorization", "Bearer "+tok)
		t.Fatalf("NewOIDC without an issuer was accepted; a token from https://other-tenant.example then got %d on a marker PUT", r.code)
	}
	if _, err := gateway.NewDeployment(gateway.Security{OIDC: cfg}); !errors.Is(err, gateway.ErrSetup) {
		t.Fatalf("OIDC without an issuer: %v, want ErrSetup", err)
	}
}
