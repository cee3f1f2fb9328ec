package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
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
// The 128-bit token is the credential, so the URL must not be logged (the
// access log shows the prefix as "/…"). But the command that is given it
// puts it on its command line, which other local users can read: so a
// connection is served only when the kernel says the socket
// that opened it runs as the same user as kiss (sameUserListener).
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
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("ephemeral gateway: listen: %w", err)
	}
	ln := net.Listener(&sameUserListener{Listener: tcp, uid: uint64(os.Getuid()), log: cfg.Logger})
	// The endpoint runs until ctx ends or stop is called, whichever comes
	// first; requests in flight then get 5 seconds to finish.
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(sctx, ln, nil, 5*time.Second, cfg.Logger, h.handler, h.bodyTimeout, h.expect) }()
	var once sync.Once
	stop = func(stopCtx context.Context) error {
		var err error
		once.Do(func() {
			cancel()
			select {
			case err = <-served:
			case <-stopCtx.Done():
				err = stopCtx.Err()
			}
		})
		return err
	}
	return "http://" + ln.Addr().String() + "/" + token, stop, nil
}
