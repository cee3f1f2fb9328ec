package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// ServerTLS builds a listener's TLS configuration from PEM files. With a
// clientCAFile, client certificates are verified against it during the
// handshake (a foreign, expired or otherwise invalid certificate never gets
// an HTTP response); a client that sends none completes the handshake and
// is then refused with 401 by ClientCerts, a clearer message than a TLS
// alert.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA: no certificate in %s", clientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// IsLoopback reports whether a listen address binds only to loopback
// (127.0.0.0/8, ::1, "localhost"). Plain HTTP is refused elsewhere unless
// forced: cache writes and markers must not cross a network in clear text.
func IsLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		// unix sockets (socket activation) are local
		_, unix := addr.(*net.UnixAddr)
		return unix
	}
	return ta.IP.IsLoopback()
}

// Serve serves h on ln (TLS when tc is set) until ctx ends, then shuts down
// gracefully: no new connections, requests in flight get up to grace to
// finish, then connections are closed.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, tc *tls.Config, grace time.Duration) error {
	var log *slog.Logger
	if s, ok := h.(*Server); ok {
		log = s.log
	}
	srv := newHTTPServer(h, log)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	if tc != nil {
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, tc)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
