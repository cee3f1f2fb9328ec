package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/internal/logbuf"
	"github.com/kiss-cache/kiss/storage"
)

func init() {
	register(&cli.Command{
		Name:  "serve",
		Usage: "serve a store over HTTP(S): reads, validated writes, gcroots/ markers and lock leases",
		Description: `Serves the Nix binary cache in --store (file://, s3://, …) to Nix clients and
to kiss itself (markers, lock leases, https:// stores of kiss with-lock).

Authentication (one per server):
  --client-ca CA.pem [--writer DN]...   TLS client certificates: every request needs a
                                        certificate from CA; writers by RFC 2253 subject DN
                                        ("CN=builder-01,O=Example", or "CN=builder-01" for
                                        a certificate whose only CN is builder-01)
  --oidc-issuer … --oidc-audience …     bearer tokens (CI): read/write by subject glob
    --oidc-jwks-url …                   (issuer and audience are both required)
  --open-reads                          with either: anyone reads, credentials only to write
  --anonymous-writes                    anyone writes (loopback listeners only; tests, sidecars)
Without any, anyone may read and nobody may write.

Reads stream through kiss serve. Over S3, --redirect-reads nar (or all) answers
readers' GETs with a 302 to a presigned URL instead, so the bytes go straight
from the bucket to the client (which must reach the bucket's endpoint).

Plain HTTP is refused on non-loopback addresses unless --insecure-http is given.
Under systemd socket activation (LISTEN_FDS) the passed sockets are used and
--listen is ignored.

EXIT STATUS
   0  stopped by SIGINT/SIGTERM after a graceful shutdown
   2  bad flags
   3  the store cannot be opened`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "store", Required: true, Usage: "store URL (file:///dir, s3://bucket?…, a plain path)", EnvVars: []string{"KISS_STORE"}},
			&cli.StringSliceFlag{Name: "listen", Value: cli.NewStringSlice("127.0.0.1:8080"), Usage: "address to listen on (repeatable)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "server certificate (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "server key (PEM)"},
			&cli.StringFlag{Name: "client-ca", Usage: "require TLS client certificates issued by this CA (PEM)"},
			&cli.GenericFlag{Name: "writer", Value: &serveList{}, Usage: "subject DN of a client certificate that may write (repeatable; never split at commas)"},
			&cli.StringFlag{Name: "oidc-issuer", Usage: "required token issuer (iss)"},
			&cli.StringFlag{Name: "oidc-audience", Usage: "required token audience (aud)"},
			&cli.StringFlag{Name: "oidc-jwks-url", Usage: "where the issuer's signing keys are fetched"},
			&cli.GenericFlag{Name: "oidc-read-subject", Value: &serveList{}, Usage: "token subject glob that may read ('*' matches anything; repeatable)"},
			&cli.GenericFlag{Name: "oidc-write-subject", Value: &serveList{}, Usage: "token subject glob that may write (and read; repeatable)"},
			&cli.BoolFlag{Name: "open-reads", Usage: "anyone may read; credentials are needed only to write"},
			&cli.BoolFlag{Name: "anonymous-writes", Usage: "anyone may write (only allowed when every listener is loopback)"},
			&cli.BoolFlag{Name: "insecure-http", Usage: "allow plain HTTP on non-loopback addresses"},
			&cli.BoolFlag{Name: "read-only", Usage: "refuse every write"},
			&cli.StringFlag{Name: "max-upload-size", Value: "0", Usage: "largest accepted upload (e.g. 4G; 0: unlimited)"},
			&cli.StringSliceFlag{Name: "require-signature", Usage: "public key (name:base64) a narinfo must be signed with (repeatable: any of them)"},
			&cli.StringFlag{Name: "upstream", Usage: "binary cache to fetch local misses from (stored unrooted)"},
			&cli.StringFlag{Name: "redirect-reads", Value: "none", Usage: "answer readers' GETs with a redirect to a presigned store URL (s3://): none, nar (NARs only) or all (every cache object)"},
			durFlag(cli.DurationFlag{Name: "redirect-ttl", Value: 15 * time.Minute, Usage: "how long a presigned redirect URL stays valid"}),
			&cli.IntFlag{Name: "priority", Value: 30, Usage: "Priority in nix-cache-info"},
			&cli.StringFlag{Name: "store-dir", Value: "/nix/store", Usage: "StoreDir in nix-cache-info"},
			durFlag(cli.DurationFlag{Name: "prune-lease-ttl", Value: 30 * time.Minute, Usage: "a prune lease refreshed within this (or within the longer TTL its body declares, at most --max-lock-ttl) refuses new writer leases"}),
			maxLockTTLFlag(),
			&cli.StringFlag{Name: "metrics-listen", Usage: "extra plain-HTTP address for /metrics only (e.g. 127.0.0.1:9101)"},
			durFlag(cli.DurationFlag{Name: "shutdown-grace", Value: 30 * time.Second, Usage: "how long requests in flight may finish on SIGTERM"}),
		},
		Action: runServe,
	})
}

// serveList is a repeatable string flag whose values are never split at
// commas: a subject DN ("CN=hydra,O=Example") is one value, which
// urfave/cli's StringSliceFlag would cut in two (and "CN=hydra" alone would
// then match by the CN shorthand: a wider grant than configured).
type serveList []string

func (l *serveList) Set(v string) error { *l = append(*l, v); return nil }
func (l *serveList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, "; ")
}

// takeServeList returns the values given for a serveList flag and empties
// it (the flag value lives as long as the process; run() may run twice).
func takeServeList(c *cli.Context, name string) []string {
	l, ok := c.Generic(name).(*serveList)
	if !ok || l == nil {
		return nil
	}
	vals := append([]string(nil), *l...)
	*l = nil
	return vals
}

// serveParseSize reads "0", "1024", "64K", "10M", "4G", "1T" (binary units).
func serveParseSize(s string) (int64, error) {
	u := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(u); n > 0 {
		if i := strings.IndexByte("KMGT", u[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			u = u[:n-1]
		}
	}
	v, err := strconv.ParseInt(u, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 0, 65536, 64K, 10M, 4G)", s)
	}
	return v * mult, nil
}

func runServe(c *cli.Context) error {
	ctx := c.Context
	// The access log (one line a request) goes through a buffer flushed
	// every second, and at once for warnings and errors: a request then
	// costs no write(2) of its own (internal/logbuf).
	logw := logbuf.NewWriter(c.App.ErrWriter, 64<<10, time.Second)
	defer logw.Close()
	h, err := textHandler(logw, c)
	if err != nil {
		return err
	}
	log := slog.New(logbuf.Handler(h, logw))
	writers := takeServeList(c, "writer")
	readSubjects, writeSubjects := takeServeList(c, "oidc-read-subject"), takeServeList(c, "oidc-write-subject")
	if c.NArg() != 0 {
		return usageError(fmt.Errorf("serve takes no arguments (got %q); the store is --store", c.Args().Slice()))
	}
	maxUp, err := serveParseSize(c.String("max-upload-size"))
	if err != nil {
		return usageError(fmt.Errorf("--max-upload-size: %w", err))
	}
	redirect, err := gateway.ParseRedirectMode(c.String("redirect-reads"))
	if err != nil {
		return usageError(fmt.Errorf("--redirect-reads: %w", err))
	}
	var keys []signature.PublicKey
	for _, k := range c.StringSlice("require-signature") {
		pk, err := signature.ParsePublicKey(strings.TrimSpace(k))
		if err != nil {
			return usageError(fmt.Errorf("--require-signature %q: %w", k, err))
		}
		keys = append(keys, pk)
	}

	dep, err := gateway.NewDeployment(gateway.Security{
		TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"), ClientCA: c.String("client-ca"), Writers: writers,
		OIDC: gateway.OIDCConfig{
			Issuer: c.String("oidc-issuer"), Audience: c.String("oidc-audience"), JWKSURL: c.String("oidc-jwks-url"),
			ReadSubjects: readSubjects, WriteSubjects: writeSubjects,
		},
		OpenReads: c.Bool("open-reads"), AnonymousWrites: c.Bool("anonymous-writes"), InsecureHTTP: c.Bool("insecure-http"),
	})
	if err != nil {
		return usageError(err)
	}
	lns, metricsLn, err := serveListeners(c, dep)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, l := range append(lns, metricsLn) {
			if l != nil {
				l.Close()
			}
		}
	}

	var create []storage.OpenOption
	if !c.Bool("read-only") {
		create = append(create, storage.CreateDir()) // a new cache, filled through this server
	}
	st, err := openStore(ctx, c.String("store"), create...)
	if err != nil {
		closeAll()
		return err
	}
	defer st.Close()
	gw, err := gateway.New(st, gateway.Config{
		Auth: dep.Auth, ReadOnly: c.Bool("read-only"), StoreDir: c.String("store-dir"), Priority: c.Int("priority"),
		MaxUploadSize: maxUp, TrustedKeys: keys, Upstream: c.String("upstream"),
		Redirect: redirect, RedirectTTL: c.Duration("redirect-ttl"),
		PruneLeaseTTL: c.Duration("prune-lease-ttl"), MaxLeaseTTL: c.Duration("max-lock-ttl"), Logger: log,
	})
	if err != nil {
		closeAll()
		return usageError(err)
	}
	log.Info("serving", "store", st.URL(), "listeners", len(lns), "read_only", c.Bool("read-only"))
	logw.Flush()
	return gateway.ServeAll(ctx, gw, dep, lns, metricsLn, c.Duration("shutdown-grace"), func(url, what string) { announceListener(c, url, what) })
}

// serveListeners opens the listeners: systemd socket activation's, or
// --listen's, and --metrics-listen; each must pass the deployment's checks.
// On error every listener opened is closed.
func serveListeners(c *cli.Context, dep *gateway.Deployment) (lns []net.Listener, metrics net.Listener, err error) {
	defer func() {
		if err != nil {
			for _, l := range append(lns, metrics) {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	activated, err := activation.Listeners()
	if err != nil {
		return nil, nil, withExit(ExitFailure, fmt.Errorf("socket activation: %w", err))
	}
	for _, l := range activated {
		if l != nil {
			lns = append(lns, l)
		}
	}
	if len(lns) == 0 {
		for _, addr := range c.StringSlice("listen") {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return lns, nil, usageError(fmt.Errorf("--listen %s: %w", addr, err))
			}
			lns = append(lns, l)
		}
	}
	for _, l := range lns {
		if err := dep.CheckListener(l.Addr()); err != nil {
			return lns, nil, usageError(err)
		}
	}
	if a := c.String("metrics-listen"); a != "" {
		if metrics, err = net.Listen("tcp", a); err != nil {
			return lns, nil, usageError(fmt.Errorf("--metrics-listen %s: %w", a, err))
		}
		if err := dep.CheckMetricsListener(metrics.Addr()); err != nil {
			return lns, metrics, usageError(err)
		}
	}
	return lns, metrics, nil
}

// announceListener prints where the server listens (stdout), so scripts and
// tests that pass port 0 learn the port.
func announceListener(c *cli.Context, url, what string) {
	if jsonWanted(c) {
		b, _ := json.Marshal(map[string]string{"listen": url, "what": what})
		fmt.Fprintln(c.App.Writer, string(b))
		return
	}
	fmt.Fprintf(c.App.Writer, "kiss serve: %s on %s\n", what, url)
}
