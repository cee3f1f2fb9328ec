package e2e

import (
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestNixCacheThroughStorage (issue 3): a cache written by the real `nix
// copy --to file://` is read back through storage (every key and byte equal
// to the files on disk), copied through storage into an S3 bucket
// (versitygw), and read back from there (every key and byte equal again).
// Finally the closure is substituted from the file:// cache into a fresh
// store with signatures checked, proving the fixture is a real cache.
func TestNixCacheThroughStorage(t *testing.T) {
	n := testenv.Nix(t)
	c := buildAndPush(t, n, dagExpr)

	disk := snapshotDir(t, c.Dir)
	// The fixture must contain every kind of object Nix writes, or the
	// comparison below proves less than it claims.
	kinds := map[string]int{}
	for _, k := range disk.keys() {
		switch {
		case k == "nix-cache-info":
			kinds["nix-cache-info"]++
		case strings.HasSuffix(k, ".narinfo"):
			kinds["narinfo"]++
		case strings.HasSuffix(k, ".ls"):
			kinds["ls"]++
		case strings.HasPrefix(k, "nar/"):
			kinds["nar"]++
		case strings.HasPrefix(k, "log/"):
			kinds["log"]++
		default:
			kinds["other"]++
		}
	}
	t.Logf("cache written by nix: %d objects %v", len(disk), kinds)
	// 9 outputs + 9 .drv files, each with a narinfo.
	if kinds["nix-cache-info"] != 1 || kinds["narinfo"] < 18 || kinds["ls"] < 9 || kinds["nar"] < 9 || kinds["log"] != 9 {
		t.Fatalf("fixture incomplete: %v", kinds)
	}

	fileStore := openStore(t, c.URL())
	viaFile := snapshotStore(t, fileStore)
	if d := diffSnapshots(disk, viaFile, "disk", "file-store"); len(d) > 0 {
		t.Fatalf("file:// store differs from the directory:\n%s", strings.Join(d, "\n"))
	}

	bucket := testenv.VersitygwBucket(t)
	s3Store := openStore(t, bucket.URL)
	if got := copyStore(t, fileStore, s3Store); got != len(disk) {
		t.Errorf("copied %d objects, want %d", got, len(disk))
	}
	viaS3 := snapshotStore(t, s3Store)
	if d := diffSnapshots(disk, viaS3, "disk", "s3"); len(d) > 0 {
		t.Fatalf("S3 copy differs:\n%s", strings.Join(d, "\n"))
	}
	t.Logf("%d objects identical on disk, through file:// and through %s", len(disk), s3Store.URL())

	// A second copy must not overwrite anything (create-if-absent): every
	// object already exists, so every put fails and the bucket is unchanged.
	// (copyStore fails the test on the first error, so do one by hand.)
	for _, k := range disk.keys()[:1] {
		if _, err := s3Store.Put(e2eCtx(t), k, strings.NewReader("overwrite"), putIfAbsent()); err == nil {
			t.Errorf("create-if-absent over existing %s succeeded", k)
		}
	}

	roots := []string{c.Out["app"], c.Out["tool"], c.Out["garbage"]}
	want, err := n.Closure("", roots...)
	if err != nil {
		t.Fatal(err)
	}
	// Substitute from the file:// cache, and from the S3 copy through an
	// HTTP front (nginx on versitygw's posix directory, where bucket
	// objects are plain files — Nix 2.8 has no S3 client).
	_, front := testenv.NginxStatic(t, bucket.Dir, false)
	for _, src := range []string{c.URL(), front} {
		store := n.NewStore()
		if err := n.SubstituteFrom(src, store, c.PublicKey, roots...); err != nil {
			t.Fatalf("substitute from %s: %v", src, err)
		}
		got, err := n.Closure(store, roots...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("closure substituted from %s: %v, want %v", src, got, want)
		}
	}
}
