package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrSetup: a combination of settings the gateway refuses to serve with,
// because it would expose the cache (plain HTTP on a network, anonymous
// writes off loopback) or contradicts itself. Nothing is served.
var ErrSetup = errors.New("refused gateway setup")

// Security is how a server authenticates clients and protects its
// listeners: the settings of `kiss serve` (named after its flags in
// errors, which the NixOS modules pass through unchanged).
type Security struct {
	// TLSCert and TLSKey (PEM files) make every listener HTTPS.
	TLSCert, TLSKey string
	// ClientCA (with TLS) requires client certificates from that CA;
	// Writers are the subject DNs that may write (see ClientCerts).
	ClientCA string
	Writers  []string
	// OIDC, if any of Issuer, Audience or JWKSURL is set, authenticates
	// bearer tokens instead.
	OIDC OIDCConfig
	// OpenReads lets anyone read; credentials are needed only to write.
	OpenReads bool
	// AnonymousWrites lets anyone write: only on loopback listeners.
	AnonymousWrites bool
	// InsecureHTTP allows plain HTTP on listeners that are not loopback.
	InsecureHTTP bool
}

func (s Security) oidc() bool {
	return s.OIDC.Issuer != "" || s.OIDC.Audience != "" || s.OIDC.JWKSURL != ""
}

// Deployment is a checked Security: the TLS configuration of the listeners
// (nil: plain HTTP) and the Authenticator of the Server (Config.Auth).
type Deployment struct {
	TLS  *tls.Config
	Auth Authenticator
	sec  Security
}

// NewDeployment checks s and builds its TLS configuration and
// authenticator. The rules, one authenticator per server:
//
//   - client certificates (ClientCA, needs TLS; Writers need ClientCA), or
//     OIDC bearer tokens, not both;
//   - AnonymousWrites contradicts either;
//   - without any: anyone reads, nobody writes (OpenReads{});
//   - OpenReads opens reads on top of certificates or tokens.
//
// Every refusal wraps ErrSetup.
func NewDeployment(s Security) (*Deployment, error) {
	refuse := func(format string, args ...any) (*Deployment, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrSetup}, args...)...)
	}
	d := &Deployment{sec: s}
	switch {
	case (s.TLSCert != "") != (s.TLSKey != ""):
		return refuse("--tls-cert and --tls-key go together")
	case s.ClientCA != "" && s.TLSCert == "":
		return refuse("--client-ca needs --tls-cert/--tls-key")
	case s.oidc() && s.ClientCA != "":
		return refuse("use either --client-ca or --oidc-*, not both, on one server")
	case s.AnonymousWrites && (s.oidc() || s.ClientCA != ""):
		return refuse("--anonymous-writes contradicts --client-ca/--oidc-*")
	case len(s.Writers) > 0 && s.ClientCA == "":
		return refuse("--writer needs --client-ca (writers are client certificates)")
	}
	if s.TLSCert != "" {
		tc, err := ServerTLS(s.TLSCert, s.TLSKey, s.ClientCA)
		if err != nil {
			return refuse("%v", err)
		}
		d.TLS = tc
	}
	switch {
	case s.oidc():
		o, err := NewOIDC(s.OIDC)
		if err != nil {
			return refuse("%v", err)
		}
		d.Auth = o
	case s.ClientCA != "":
		d.Auth = ClientCerts{Writers: s.Writers}
	case s.AnonymousWrites:
		d.Auth = Open{}
	default:
		d.Auth = OpenReads{}
	}
	if s.OpenReads {
		switch d.Auth.(type) {
		case Open, OpenReads:
		default:
			d.Auth = OpenReads{Writers: d.Auth}
		}
	}
	return d, nil
}

// CheckListener refuses a cache listener the deployment must not serve
// on: plain HTTP off loopback (unless InsecureHTTP: cache writes and
// markers must not cross a network in clear text), and anonymous writes
// off loopback (ever). Unix sockets (socket activation) are local.
func (d *Deployment) CheckListener(a net.Addr) error {
	loop := IsLoopback(a)
	if d.TLS == nil && !loop && !d.sec.InsecureHTTP {
		return fmt.Errorf("%w: refusing plain HTTP on %s (not loopback): give --tls-cert/--tls-key, or --insecure-http", ErrSetup, a)
	}
	if d.sec.AnonymousWrites && !loop {
		return fmt.Errorf("%w: --anonymous-writes is only allowed on loopback listeners, not %s", ErrSetup, a)
	}
	return nil
}

// CheckMetricsListener refuses the plain-HTTP metrics listener off
// loopback unless InsecureHTTP.
func (d *Deployment) CheckMetricsListener(a net.Addr) error {
	if !IsLoopback(a) && !d.sec.InsecureHTTP {
		return fmt.Errorf("%w: refusing plain HTTP for metrics on %s (not loopback): use a loopback address, or --insecure-http", ErrSetup, a)
	}
	return nil
}

// ServeAll serves s on every listener (HTTPS when the deployment has TLS)
// and its metrics on metrics (if not nil), until ctx ends, then shuts all
// down gracefully (see Serve). announce, if set, is told each listener's
// URL and what it serves ("cache", "metrics") before serving starts. It
// returns what made a listener fail, unless ctx ended.
func ServeAll(ctx context.Context, s *Server, d *Deployment, lns []net.Listener, metrics net.Listener, grace time.Duration, announce func(url, what string)) error {
	if announce == nil {
		announce = func(string, string) {}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+1)
	run := func(l net.Listener, serve func() error) {
		wg.Go(func() {
			if err := serve(); err != nil {
				errc <- fmt.Errorf("%s: %w", l.Addr(), err)
			}
		})
	}
	scheme := "http"
	if d.TLS != nil {
		scheme = "https"
	}
	for _, l := range lns {
		announce(scheme+"://"+l.Addr().String(), "cache")
		run(l, func() error { return Serve(ctx, l, s, d.TLS, grace) })
	}
	if metrics != nil {
		announce("http://"+metrics.Addr().String()+"/metrics", "metrics")
		run(metrics, func() error { return ServeMetrics(ctx, metrics, s, grace) })
	}
	wg.Wait()
	close(errc)
	var errs []error
	for e := range errc {
		errs = append(errs, e)
	}
	if len(errs) > 0 && ctx.Err() == nil {
		return errors.Join(errs...)
	}
	return nil
}
