package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// Access is what one request may do, decided by an Authenticator.
type Access struct {
	// Subject names the client in logs: a certificate DN, a token subject,
	// or "anonymous".
	Subject string
	Read    bool
	Write   bool
}

// Credentials are what a request presents: its Authorization header and the
// TLS state of its connection (nil on plain HTTP), whose VerifiedChains hold
// a client certificate the handshake verified.
type Credentials struct {
	Authorization string
	TLS           *tls.ConnectionState
}

// credentials reads a request's Credentials; the TLS state (a copy per
// request) only when the authenticator looks at it.
func credentials(rc *fasthttp.RequestCtx, withTLS bool) Credentials {
	var c Credentials
	if withTLS {
		c.TLS = rc.TLSConnectionState()
	}
	if h := rc.Request.Header.Peek("Authorization"); h != nil {
		c.Authorization = string(h)
	}
	return c
}

// usesTLS reports whether an authenticator may look at Credentials.TLS.
func usesTLS(a Authenticator) bool {
	switch a := a.(type) {
	case Open:
		return false
	case OpenReads:
		return a.Writers != nil && usesTLS(a.Writers)
	case *OIDC:
		return false
	}
	return true // ClientCerts, and any other
}

// Authenticator decides what a request may do. It returns an *AuthError to
// reject the request outright (401: no or bad credentials); a valid client
// that may not do something gets an Access without that right (403 later).
type Authenticator interface {
	Authenticate(ctx context.Context, c Credentials) (Access, error)
}

// AuthError rejects a request. Reason goes to the log and the metrics only;
// the client gets the status and a generic message, so nothing about the
// verification leaks.
type AuthError struct {
	Status int
	Reason string
}

func (e *AuthError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Reason) }

// Open lets every client read and write. It is for the ephemeral loopback
// endpoint (whose secret path prefix is the credential) and for tests.
type Open struct{}

// Authenticate grants everything.
func (Open) Authenticate(context.Context, Credentials) (Access, error) {
	return Access{Subject: "anonymous", Read: true, Write: true}, nil
}

// OpenReads lets anyone read and asks Writers (nil: nobody) about writes.
// Failing the writer check is not an error here: the client still reads.
type OpenReads struct{ Writers Authenticator }

// Authenticate grants reads and delegates writes.
func (o OpenReads) Authenticate(ctx context.Context, c Credentials) (Access, error) {
	a := Access{Subject: "anonymous", Read: true}
	if o.Writers == nil {
		return a, nil
	}
	if !c.present() {
		return a, nil
	}
	w, err := o.Writers.Authenticate(ctx, c)
	if err != nil {
		return Access{}, err
	}
	w.Read = true
	return w, nil
}

// present reports whether the client offered any credentials.
func (c Credentials) present() bool {
	return c.Authorization != "" || (c.TLS != nil && len(c.TLS.PeerCertificates) > 0)
}

// ClientCerts authenticates by TLS client certificate. The TLS listener must
// verify the chain against the client CA (ClientCAs with
// tls.VerifyClientCertIfGiven or RequireAndVerifyClientCert): a foreign or
// expired certificate never completes the handshake. Here a request without a
// verified certificate is rejected (401), any verified certificate may read,
// and writers are matched by subject DN.
type ClientCerts struct {
	// Writers are RFC 2253 subject DNs as nginx's $ssl_client_s_dn prints
	// them ("CN=builder-01,O=Example"), matched exactly. An entry that is a
	// single CN attribute ("CN=builder-01") is a shorthand: it matches a
	// certificate whose subject holds exactly one CN attribute, equal to it
	// (so neither "CN=builder-01,CN=reader" nor the multi-valued RDN
	// "CN=builder-01+CN=reader" does). The nginx backend's writer map
	// (nixos/nginx-render.nix) implements the same rule.
	Writers []string
}

// Authenticate checks the verified client certificate.
func (c ClientCerts) Authenticate(_ context.Context, cr Credentials) (Access, error) {
	if cr.TLS == nil || len(cr.TLS.VerifiedChains) == 0 || len(cr.TLS.VerifiedChains[0]) == 0 {
		return Access{}, &AuthError{Status: http.StatusUnauthorized, Reason: "no verified client certificate"}
	}
	cert := cr.TLS.VerifiedChains[0][0]
	dn := SubjectDN(cert)
	return Access{Subject: dn, Read: true, Write: c.isWriter(cert, dn)}, nil
}

func (c ClientCerts) isWriter(cert *x509.Certificate, dn string) bool {
	cn, hasOneCN := singleCN(cert)
	for _, w := range c.Writers {
		if w == dn || hasOneCN && isCNShorthand(w) && w == cn {
			return true
		}
	}
	return false
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// singleCN returns the subject's CN attribute printed as RFC 2253
// ("CN=builder-01", value escaped as in SubjectDN) when the subject holds
// exactly one CN attribute, counting every member of multi-valued RDNs.
func singleCN(cert *x509.Certificate) (string, bool) {
	var found []pkix.AttributeTypeAndValue
	for _, rdn := range subjectRDNs(cert) {
		for _, atv := range rdn {
			if atv.Type.Equal(oidCommonName) {
				found = append(found, atv)
			}
		}
	}
	if len(found) != 1 {
		return "", false
	}
	return formatDN(pkix.RDNSequence{{found[0]}}), true
}

// isCNShorthand reports whether a writer entry is one CN attribute: "CN="
// and a value without an unescaped "," or "+" (which would start another
// attribute).
func isCNShorthand(w string) bool {
	v, ok := strings.CutPrefix(w, "CN=")
	if !ok || v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++ // the escaped character
		case ',', '+':
			return false
		}
	}
	return true
}

// SubjectDN formats a certificate's subject as RFC 2253, from the raw
// encoded subject so that attribute order and types are exactly the
// certificate's: the same string nginx (OpenSSL's XN_FLAG_RFC2253) puts in
// $ssl_client_s_dn.
func SubjectDN(cert *x509.Certificate) string {
	if rdns := subjectRDNs(cert); rdns != nil {
		return formatDN(rdns)
	}
	return cert.Subject.String()
}

func subjectRDNs(cert *x509.Certificate) pkix.RDNSequence {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || len(rest) != 0 {
		return nil
	}
	return rdns
}

// formatDN prints an RDN sequence as OpenSSL does for nginx: RDNs most
// specific first (RFC 2253), and, unlike pkix.RDNSequence.String, the
// members of a multi-valued RDN in reverse encoding order too (OpenSSL
// reverses its flat list of attributes), and bytes of non-ASCII UTF-8 as
// "\XX" (OpenSSL's ESC_MSB: "bäcker" is "b\C3\A4cker").
func formatDN(rdns pkix.RDNSequence) string {
	rev := make(pkix.RDNSequence, len(rdns))
	for i, rdn := range rdns {
		r := make(pkix.RelativeDistinguishedNameSET, len(rdn))
		for j, atv := range rdn {
			r[len(rdn)-1-j] = atv
		}
		rev[i] = r
	}
	s := rev.String()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 {
			fmt.Fprintf(&b, "\\%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// OIDCConfig configures bearer-token authentication (e.g. GitHub Actions).
type OIDCConfig struct {
	// Issuer must equal the token's iss ("https://token.actions.githubusercontent.com").
	// Required: a key set may sign for more than one issuer (the tenants
	// of a multi-tenant provider), so the signature alone does not say
	// whose token it is.
	Issuer string
	// Audience must be among the token's aud. Required.
	Audience string
	// JWKSURL is where the signing keys are fetched: when the gateway
	// starts, every hour, and when a token names an unknown kid (key
	// rotation) — but then at most once per MinJWKSRefresh, so forged
	// tokens cannot make the gateway hammer the issuer. A bad signature
	// under a known kid never causes a fetch.
	JWKSURL string
	// MinJWKSRefresh is the shortest interval between two fetches caused by
	// unknown kids (default 1 minute). A token naming an unknown kid while
	// a fetch is not allowed waits up to 5 s for one, then is refused.
	MinJWKSRefresh time.Duration
	// ReadSubjects and WriteSubjects are globs over the token's sub, where
	// "*" matches any run of characters ("repo:org/*:ref:refs/heads/main").
	// Empty lists grant nothing.
	ReadSubjects  []string
	WriteSubjects []string
	// HTTPClient fetches the JWKS (nil: a client with a 10 s timeout).
	HTTPClient *http.Client
	// Now is for tests (nil: time.Now).
	Now func() time.Time
}

// OIDC authenticates by "Authorization: Bearer <JWT>". Only asymmetric
// algorithms are accepted, so neither "alg: none" nor HMAC keyed with the
// public key can pass.
type OIDC struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
}

// oidcAlgs are the signature algorithms accepted: asymmetric only.
var oidcAlgs = []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA}

// JWKS refresh timing (see OIDCConfig.JWKSURL).
const (
	jwksPeriodic     = time.Hour
	jwksMinRefresh   = time.Minute
	jwksRefreshWait  = 5 * time.Second
	jwksFetchTimeout = 10 * time.Second
)

// NewOIDC checks the configuration and sets up the key set: a JWKS cache
// (github.com/MicahParks/jwkset) that fetches the keys now (a failure is
// logged, not fatal: the issuer may come up later), every hour, and on an
// unknown kid at most once per MinJWKSRefresh. go-oidc checks the claims.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("oidc: an issuer is required (--oidc-issuer: the iss tokens must carry)")
	}
	if cfg.Audience == "" {
		return nil, errors.New("oidc: an audience is required")
	}
	if cfg.JWKSURL == "" {
		return nil, errors.New("oidc: a JWKS URL is required")
	}
	if len(cfg.ReadSubjects) == 0 && len(cfg.WriteSubjects) == 0 {
		return nil, errors.New("oidc: no read or write subjects: nobody could use the cache")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: jwksFetchTimeout}
	}
	if cfg.MinJWKSRefresh <= 0 {
		cfg.MinJWKSRefresh = jwksMinRefresh
	}
	logFetch := func(ctx context.Context, err error) {
		slog.Default().WarnContext(ctx, "oidc: fetching the JWKS failed; keeping the keys fetched before", "url", cfg.JWKSURL, "err", err)
	}
	remote, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    hc,
		HTTPTimeout:               jwksFetchTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       logFetch,
		RefreshInterval:           jwksPeriodic,
	})
	if err != nil {
		return nil, fmt.Errorf("oidc: JWKS URL %q: %w", cfg.JWKSURL, err)
	}
	keys, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{cfg.JWKSURL: remote},
		RateLimitWaitMax:  jwksRefreshWait,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.MinJWKSRefresh), 1),
	})
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	v := oidc.NewVerifier(cfg.Issuer, jwksKeySet{keys}, &oidc.Config{
		ClientID:             cfg.Audience,
		SupportedSigningAlgs: oidcAlgs,
		Now:                  cfg.Now,
	})
	return &OIDC{cfg: cfg, verifier: v}, nil
}

// jwksKeySet is go-oidc's KeySet over a jwkset cache: the key named by the
// token's kid (fetched again, rate-limited, if unknown) or, for a token
// without a kid, any cached key.
type jwksKeySet struct{ keys jwkset.Storage }

func (k jwksKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	algs := make([]jose.SignatureAlgorithm, len(oidcAlgs))
	for i, a := range oidcAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSigned(raw, algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("jwt must have exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	var candidates []jwkset.JWK
	if kid == "" {
		if candidates, err = k.keys.KeyReadAll(ctx); err != nil {
			return nil, err
		}
	} else {
		key, err := k.keys.KeyRead(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("signing key %q: %w", kid, err)
		}
		candidates = []jwkset.JWK{key}
	}
	for _, c := range candidates {
		if payload, err := jws.Verify(c.Key()); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("failed to verify the signature")
}

// Authenticate verifies the bearer token and matches its subject.
func (o *OIDC) Authenticate(ctx context.Context, c Credentials) (Access, error) {
	h := c.Authorization
	if h == "" {
		return Access{}, &AuthError{Status: http.StatusUnauthorized, Reason: "missing bearer token"}
	}
	scheme, raw, ok := strings.Cut(h, " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return Access{}, &AuthError{Status: http.StatusUnauthorized, Reason: "authorization is not a bearer token"}
	}
	tok, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		return Access{}, &AuthError{Status: http.StatusUnauthorized, Reason: "invalid token: " + err.Error()}
	}
	return Access{
		Subject: tok.Subject,
		Read:    matchAny(o.cfg.ReadSubjects, tok.Subject) || matchAny(o.cfg.WriteSubjects, tok.Subject),
		Write:   matchAny(o.cfg.WriteSubjects, tok.Subject),
	}, nil
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if globMatch(g, s) {
			return true
		}
	}
	return false
}

// globMatch: "*" matches any run of characters (including ":" and "/", as
// the original kiss-cache does); everything else is literal.
func globMatch(glob, s string) bool {
	parts := strings.Split(glob, "*")
	if len(parts) == 1 {
		return glob == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
