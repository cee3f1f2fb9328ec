package httpstore_test

import (
	"errors"
	"testing"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/storage"
)

// A bearer token is never sent in the clear to another host: anyone on the
// path could read it and write with it. Loopback and https:// are fine.
func TestBearerNotOverPlainHTTP(t *testing.T) {
	for url, ok := range map[string]bool{
		"http://cache.example.org":       false,
		"http://10.0.0.5:8080/prefix":    false,
		"http://[2001:db8::1]:80":        false,
		"http://127.0.0.1:8080/tok":      true,
		"http://localhost:8080":          true,
		"http://[::1]:8080":              true,
		"https://cache.example.org/path": true,
	} {
		c, err := httpstore.Open(url, httpstore.Options{Bearer: "secret-token"})
		if ok != (err == nil) || (err != nil && !errors.Is(err, storage.ErrInvalidURL)) {
			t.Errorf("Open(%s) with a bearer token: %v, want ok %v", url, err, ok)
		}
		if c != nil {
			c.Close()
		}
	}
	if c, err := httpstore.Open("http://cache.example.org", httpstore.Options{}); err != nil {
		t.Errorf("Open without a token: %v", err)
	} else {
		c.Close()
	}
}
