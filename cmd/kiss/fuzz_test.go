package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// FuzzWithLockMarker: whatever MARKER `kiss with-lock` accepts names a
// marker key the pruner reads (issue 11 item 3: with-lock accepted
// gcroots/team/.x, which roots nothing), never a lease under
// gcroots/.lock/, never a key that could leave the cache, in a cache of a
// known kind; and a file:// cache root is an absolute, clean directory.
func FuzzWithLockMarker(f *testing.F) {
	for _, s := range []string{
		"/srv/cache/gcroots/web1", "file:///srv/cache/gcroots/team/web", "s3://bucket/gcroots/web?region=x",
		"https://cache.example/prefix/gcroots/web", "/srv/cache/gcroots/.lock/prune", "/srv/cache/gcroots/",
		"relative/gcroots/x", "s3://bucket/sub/gcroots/x", "ftp://x/gcroots/y", "/a/gcroots/b/gcroots/c",
		"https://h/gcroots/%2e%2e/x", "file://host/gcroots/x", "/srv/cache/gcroots/team/.x", "/srv/cache/gcroots/a//b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, marker string) {
		a := &withLockArgs{marker: marker}
		if a.splitMarker() != nil {
			return
		}
		k := a.markerKey
		if !strings.HasPrefix(k, "gcroots/") || strings.HasPrefix(k, "gcroots/.lock") || storage.ValidateKey(k) != nil || !nixcache.IsMarkerKey(k) {
			t.Fatalf("MARKER %q accepted as key %q", marker, k)
		}
		switch a.kind {
		case "file":
			if !filepath.IsAbs(a.fileRoot) || filepath.Clean(a.fileRoot) != a.fileRoot {
				t.Fatalf("MARKER %q: file root %q", marker, a.fileRoot)
			}
		case "s3", "http":
			if a.storeURL == "" {
				t.Fatalf("MARKER %q: no store URL", marker)
			}
		default:
			t.Fatalf("MARKER %q: kind %q", marker, a.kind)
		}
	})
}
