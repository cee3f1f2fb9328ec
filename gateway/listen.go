package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// ServerTLS builds a listener's TLS configuration from PEM files. With a
// clientCAFile, client certificates are verified against it during the
// handshake (a foreign, expired or otherwise invalid certificate never gets
// an HTTP response); a client that sends none completes the handshake and
// is then refused with 401 by ClientCerts, a clearer message than a TLS
// alert. The gateway speaks HTTP/1.1, as Nix does to a binary cache.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
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

// Serve serves s on ln (TLS when tc is set) until ctx ends, then shuts down
// gracefully: no new connections, requests in flight get up to grace to
// finish, then their connections are closed.
func Serve(ctx context.Context, ln net.Listener, s *Server, tc *tls.Config, grace time.Duration) error {
	return serve(ctx, ln, tc, grace, s.log, s.handler, s.bodyTimeout, s.expect)
}

// bodyTimeout bounds the reading of a request body that fasthttp does
// before the handler runs (the first 8 KiB of a body of known length) by
// the same rate rule as the rest of it (see Server.deadline).
func (s *Server) bodyTimeout(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	n := bodyLength(h)
	if n == 0 {
		return fasthttp.RequestConfig{} // no body (every read): nothing to bound
	}
	return fasthttp.RequestConfig{ReadTimeout: time.Until(s.deadline(n))}
}

// bodyLength is a request body's length: -1 for a chunked body of unknown
// length, 0 when there is none.
func bodyLength(h *fasthttp.RequestHeader) int64 {
	n := h.ContentLength() // fasthttp: -1 chunked, -2 neither length nor chunked
	if n < -1 {
		return 0
	}
	return int64(n)
}

// ServeMetrics serves only s's Prometheus metrics, at /metrics, on ln (the
// --metrics-listen address), until ctx ends.
func ServeMetrics(ctx context.Context, ln net.Listener, s *Server, grace time.Duration) error {
	return serve(ctx, ln, nil, grace, s.log, func(context.Context) fasthttp.RequestHandler {
		return func(rc *fasthttp.RequestCtx) {
			if string(rc.Path()) != "/metrics" {
				rc.Error("not found\n", fasthttp.StatusNotFound)
				return
			}
			s.metricsHandler(rc)
		}
	}, nil, nil)
}

// serve runs a fasthttp server with the settings every gateway listener
// uses. handler gets the context store calls run under: it outlives ctx by
// the shutdown grace, so requests in flight can finish.
func serve(ctx context.Context, ln net.Listener, tc *tls.Config, grace time.Duration, log *slog.Logger,
	handler func(context.Context) fasthttp.RequestHandler, headerReceived func(*fasthttp.RequestHeader) fasthttp.RequestConfig,
	expect func(context.Context) func(*fasthttp.RequestCtx) int) error {
	if log == nil {
		log = slog.Default()
	}
	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()
	conns := &connSet{m: map[net.Conn]struct{}{}}
	srv := newServer(handler(reqCtx), log, conns.track)
	srv.HeaderReceived = headerReceived
	if expect != nil {
		srv.ExpectHandler = expect(reqCtx)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	sl := &startedListener{Listener: ln, started: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(sl) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// fasthttp shuts down only the listeners Serve has taken up
	select {
	case <-sl.started:
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	if err != nil {
		// grace is over: end what is still running
		cancelReqs()
		conns.closeAll()
		err = nil
	}
	if serr := <-errc; serr != nil {
		return serr
	}
	return err
}

// newServer has the settings every gateway listener uses:
//   - request headers (at most 16 KiB) must arrive within 30 s, idle
//     keep-alive connections close after 2 minutes;
//   - bodies are streamed (never buffered beyond 64 KiB) and bounded per
//     request by MinRate deadlines (see Server.deadline), since a fixed
//     timeout would cut off multi-GiB NARs; small responses get a minute;
//   - no default Content-Type or Server header: each response says what it
//     is.
func newServer(h fasthttp.RequestHandler, log *slog.Logger, connState func(net.Conn, fasthttp.ConnState)) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h,
		Name:                         "kiss",
		ReadTimeout:                  30 * time.Second,
		WriteTimeout:                 time.Minute,
		IdleTimeout:                  2 * time.Minute,
		ReadBufferSize:               16 << 10,
		MaxRequestBodySize:           64 << 10,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		ConnState:                    connState,
		// TLS handshake failures (foreign or expired client certificates)
		// and the like, as warnings in the structured log.
		Logger: fasthttpLogger{log},
	}
}

// fasthttpLogger sends fasthttp's own messages to slog as warnings.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}

// startedListener tells when Serve first accepts, i.e. has taken it up.
type startedListener struct {
	net.Listener
	once    sync.Once
	started chan struct{}
}

func (l *startedListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.started) })
	return l.Listener.Accept()
}

// connSet tracks open connections, so those still busy when the shutdown
// grace ends can be closed.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (c *connSet) track(conn net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateNew:
		c.mu.Lock()
		c.m[conn] = struct{}{}
		c.mu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		c.mu.Lock()
		delete(c.m, conn)
		c.mu.Unlock()
	}
}

func (c *connSet) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.m {
		conn.Close()
	}
}
