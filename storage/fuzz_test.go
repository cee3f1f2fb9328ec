package storage

import (
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzValidateKey: a key ValidateKey accepts can never leave the cache
// root, whatever it holds: joined to a root and cleaned it stays strictly
// under it, unchanged (no "." or ".." segment, no doubled or edge slash).
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"nar/x.nar", "gcroots/.lock/prune", "../etc/passwd", "a/../../b", "a//b", "/abs", "a/", ".", "..", ".kiss/tmp/put-1", "nar/%2e%2e", "a\\b", "a\x00b", "ü"} {
		f.Add(s)
	}
	const root = "/srv/cache"
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		p := filepath.Join(root, filepath.FromSlash(key))
		if !strings.HasPrefix(p, root+"/") || p != root+"/"+key {
			t.Fatalf("accepted key %q resolves to %q", key, p)
		}
		if ValidatePrefix(key+"/") != nil {
			t.Fatalf("key %q accepted but not as a prefix", key)
		}
	})
}

// FuzzParseS3URL: an s3:// URL is either refused with ErrInvalidURL or
// names a bucket, carries no credentials, and points (if anywhere) at an
// http(s) endpoint with a host.
func FuzzParseS3URL(f *testing.F) {
	for _, s := range []string{
		"s3://bucket?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000",
		"s3://b?endpoint=127.0.0.1:9000&scheme=http",
		"s3://user:pass@b",
		"s3://b/path",
		"s3://b?endpoint=ftp://x",
		"s3://b?compression=zstd&secret-key=/k&conditional_delete=false",
		"s3://?region=x",
		"s3://b?region=a&region=b",
		"s3://b?addressing-style=virtual&use_path_style=true",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "s3" {
			return
		}
		c, err := parseS3URL(u)
		if err != nil {
			if !errors.Is(err, ErrInvalidURL) {
				t.Fatalf("%q refused without ErrInvalidURL: %v", raw, err)
			}
			return
		}
		if c.bucket == "" || u.User != nil {
			t.Fatalf("%q accepted with bucket %q, user %v", raw, c.bucket, u.User)
		}
		if ep := c.gocloudParams.Get("endpoint"); ep != "" {
			pu, err := url.Parse(ep)
			if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
				t.Fatalf("%q accepted with endpoint %q", raw, ep)
			}
		}
	})
}
