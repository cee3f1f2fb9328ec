package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/kiss-cache/kiss/storage"
)

// EphemeralOption adjusts the Config of an ephemeral endpoint.
type EphemeralOption func(*Config)

// WithLogger sends the endpoint's access log to l.
func WithLogger(l *slog.Logger) EphemeralOption { return func(c *Config) { c.Logger = l } }

// WithTrustedKeys makes the endpoint refuse narinfos not signed by one of keys.
func WithTrustedKeys(keys []signature.PublicKey) EphemeralOption {
	return func(c *Config) { c.TrustedKeys = keys }
}

// WithMaxUploadSize bounds one upload (0: unlimited).
func WithMaxUploadSize(n int64) EphemeralOption { return func(c *Config) { c.MaxUploadSize = n } }

// Ephemeral serves st on a fresh loopback port under a random secret path
// prefix and returns the base URL, "http://127.0.0.1:PORT/<token>", for
// `nix copy --to`. It is how `kiss with-lock` lets any Nix version push to a
// store Nix cannot reach itself (S3 with Nix 2.8, an mTLS or OIDC gateway
// through the https client store): the bytes pass through the same write
// validation as `kiss serve`.
//
// Anyone who knows the URL may write; the 128-bit token is the credential,
// so the URL must not be logged (the access log shows the prefix as "/…").
// The endpoint stops when ctx is done or stop is called; stop waits for
// requests in flight until its own ctx expires.
func Ephemeral(ctx context.Context, st storage.Store, opts ...EphemeralOption) (baseURL string, stop func(context.Context) error, err error) {
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return "", nil, fmt.Errorf("ephemeral gateway: token: %w", err)
	}
	token := hex.EncodeToString(tok[:])
	cfg := Config{Auth: Open{}, Prefix: "/" + token, Logger: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.Prefix, cfg.Auth, cfg.ReadOnly = "/"+token, Open{}, false
	h, err := New(st, cfg)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("ephemeral gateway: listen: %w", err)
	}
	srv := newHTTPServer(h, cfg.Logger)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stopped := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-stopped:
		}
	}()
	stop = func(sctx context.Context) error {
		err := http.ErrServerClosed
		once.Do(func() {
			close(stopped)
			err = srv.Shutdown(sctx)
			if err != nil {
				srv.Close()
			}
			if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
		})
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
	return "http://" + ln.Addr().String() + "/" + token, stop, nil
}

// newHTTPServer has the timeouts every gateway listener uses: headers must
// arrive within 30 s and idle keep-alive connections close after 2 min.
// Bodies are bounded per request by MinRate deadlines (see Server.deadline),
// since a fixed read or write timeout would cut off multi-GiB NARs.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures (foreign or expired client certificates)
		// and the like, as warnings in the structured log.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
