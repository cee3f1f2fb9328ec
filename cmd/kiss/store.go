package main

import (
	"context"
	"net/url"
	"os"
	"strings"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/storage"
)

// Environment variables for https:// stores (a kiss gateway), read here and
// nowhere else: storage.Open takes only a URL, and library code reads no
// environment.
const (
	envClientCert = "KISS_CLIENT_CERT" // with envClientKey: an mTLS client certificate
	envClientKey  = "KISS_CLIENT_KEY"
	envCAFile     = "KISS_CA_FILE" // the gateway's CA
	envBearer     = "KISS_BEARER"  // an OIDC token
)

// httpOptionsFromEnv are the client options every command but with-lock
// (which has flags for them) uses for an https:// store.
func httpOptionsFromEnv() httpstore.Options {
	return httpstore.Options{
		CertFile: os.Getenv(envClientCert),
		KeyFile:  os.Getenv(envClientKey),
		CAFile:   os.Getenv(envCAFile),
		Bearer:   os.Getenv(envBearer),
	}
}

// isHTTPStore reports whether rawURL names a kiss gateway.
func isHTTPStore(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && (strings.EqualFold(u.Scheme, "http") || strings.EqualFold(u.Scheme, "https"))
}

// openStore opens the store at rawURL for a command: a URL kiss cannot make
// sense of is a usage error (2), a store that cannot be opened or does not
// exist is ExitStore (3). Only writers that may start a cache pass
// storage.CreateDir. http(s):// is a kiss gateway, with credentials from
// the environment.
func openStore(ctx context.Context, rawURL string, opts ...storage.OpenOption) (storage.Store, error) {
	var st storage.Store
	var err error
	if isHTTPStore(rawURL) {
		st, err = httpstore.Open(rawURL, httpOptionsFromEnv())
	} else {
		st, err = storage.Open(ctx, rawURL, opts...)
	}
	if err != nil {
		return nil, openError(err)
	}
	return st, nil
}
