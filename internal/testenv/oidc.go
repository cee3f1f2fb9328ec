package testenv

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// OIDCIssuer is a token issuer for tests: a JWKS endpoint on 127.0.0.1
// (with one RS256 key, kid "test-key") and tokens signed with that key, as
// GitHub Actions would mint them. Fetches counts the JWKS requests.
type OIDCIssuer struct {
	Issuer  string // the iss claim
	JWKSURL string
	t       testing.TB
	key     *rsa.PrivateKey
	fetches atomic.Int64
}

// NewOIDCIssuer starts the JWKS endpoint; it stops when the test ends.
func NewOIDCIssuer(t testing.TB) *OIDCIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &OIDCIssuer{Issuer: "https://token.kiss.test", t: t, key: key}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "test-key", "alg": "RS256", "use": "sig",
		"n": b64url(key.N.Bytes()), "e": b64url(big.NewInt(int64(key.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		is.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(srv.Close)
	is.JWKSURL = srv.URL
	return is
}

// Fetches is how many times the JWKS was fetched.
func (is *OIDCIssuer) Fetches() int64 { return is.fetches.Load() }

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Token mints a token for sub and aud valid for ttl (negative: expired).
func (is *OIDCIssuer) Token(sub, aud string, ttl time.Duration) string {
	now := time.Now()
	return is.sign(is.key, "test-key", map[string]any{
		"iss": is.Issuer, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	})
}

// Forged mints a token for sub and aud signed by a key the issuer never
// published, under kid (the issuer's "test-key", or any other).
func (is *OIDCIssuer) Forged(kid, sub, aud string) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		is.t.Fatal(err)
	}
	now := time.Now()
	return is.sign(key, kid, map[string]any{
		"iss": is.Issuer, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
}

func (is *OIDCIssuer) sign(key *rsa.PrivateKey, kid string, claims map[string]any) string {
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"})
	pl, _ := json.Marshal(claims)
	signing := b64url(hdr) + "." + b64url(pl)
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		is.t.Fatal(err)
	}
	return signing + "." + b64url(sig)
}
