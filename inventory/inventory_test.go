package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/inventory"
	"github.com/kiss-cache/kiss/storage"
)

func objects(n int) []storage.Object {
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var out []storage.Object
	for i := range n {
		key := fmt.Sprintf("nar/%04d.nar.zst", i)
		if i%3 == 0 {
			key = fmt.Sprintf("log/%04d-x y+z.drv", i) // a key that needs escaping
		}
		out = append(out, storage.Object{Key: key, Size: int64(i * 7), ModTime: base.Add(time.Duration(i) * time.Minute), ETag: fmt.Sprintf(`"%032x"`, i)})
	}
	return out
}

// TestRoundTrip: a report written in S3's layout reads back object for
// object, in both formats, over several data files.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, format := range []string{"CSV", "Parquet"} {
		t.Run(format, func(t *testing.T) {
			dest := storage.NewMem(nil)
			want := objects(2500)
			taken := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
			key, err := inventory.Write(ctx, dest, "inv", "cache", format, taken, want, 1000)
			if err != nil {
				t.Fatal(err)
			}
			r, err := inventory.Open(ctx, dest, key, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if !r.Taken().Equal(taken) || r.Manifest().SourceBucket != "cache" || len(r.Manifest().Files) != 3 {
				t.Fatalf("manifest %+v, taken %v", r.Manifest(), r.Taken())
			}
			var got []storage.Object
			for batch, err := range r.Objects(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, batch...)
			}
			if len(got) != len(want) {
				t.Fatalf("%d objects, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Key != want[i].Key || got[i].Size != want[i].Size || !got[i].ModTime.Equal(want[i].ModTime) || got[i].ETag != want[i].ETag {
					t.Fatalf("object %d: %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestCorruptDataFile: a data file that does not match the manifest's MD5
// is refused, not read.
func TestCorruptDataFile(t *testing.T) {
	ctx := context.Background()
	dest := storage.NewMem(nil)
	key, err := inventory.Write(ctx, dest, "inv", "cache", "CSV", time.Now(), objects(10), 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := inventory.Open(ctx, dest, key, "")
	if err != nil {
		t.Fatal(err)
	}
	f := r.Manifest().Files[0]
	dest.Put(ctx, f.Key, strings.NewReader("not gzip"), storage.PutOptions{})
	for _, err := range r.Objects(ctx) {
		if !errors.Is(err, inventory.ErrInvalid) {
			t.Fatalf("corrupt data file: %v", err)
		}
		return
	}
	t.Fatal("no error")
}

// TestOpenURL: a report copied to a directory is found from its manifest's
// path; bad URLs are refused.
func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	open := func(ctx context.Context, u string) (storage.Store, error) { return storage.Open(ctx, u) }
	dir := t.TempDir()
	dest, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := inventory.Write(ctx, dest, "inv", "cache", "CSV", time.Now(), objects(5), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{dir + "/" + key, "file://" + dir + "/" + key} {
		r, closeIt, err := inventory.OpenURL(ctx, u, open, "")
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		n := 0
		for batch, err := range r.Objects(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			n += len(batch)
		}
		closeIt()
		if n != 5 {
			t.Fatalf("%s: %d objects", u, n)
		}
	}
	for _, bad := range []string{"s3://bucket", "http://x/manifest.json", dir + "/nothing.json"} {
		if _, _, err := inventory.OpenURL(ctx, bad, open, ""); err == nil {
			t.Errorf("OpenURL(%q) accepted", bad)
		}
	}
}

// TestOpenURLPlainPath: a manifest given as a plain path is that file, as a
// STORE path is: a relative path is relative to the working directory (it
// was read as file://FIRST-DIR/rest, so /rest was opened), and a directory
// whose name holds '#', '?' or '%' is no URL syntax. A file:// URL with a
// host, or a scheme without "//", is refused as a bad URL.
func TestOpenURLPlainPath(t *testing.T) {
	ctx := context.Background()
	open := func(ctx context.Context, u string) (storage.Store, error) { return storage.Open(ctx, u) }
	for _, name := range []string{"plain", "odd #1 ?x %41"} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, name)
			dest, err := storage.OpenFile(dir, storage.CreateDir())
			if err != nil {
				t.Fatal(err)
			}
			key, err := inventory.Write(ctx, dest, "inv", "cache", "CSV", time.Now(), objects(5), 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Chdir(base)
			for _, p := range []string{filepath.Join(name, key), "./" + filepath.Join(name, key), filepath.Join(dir, key)} {
				r, closeIt, err := inventory.OpenURL(ctx, p, open, "")
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				n := 0
				for batch, err := range r.Objects(ctx) {
					if err != nil {
						t.Fatalf("%s: %v", p, err)
					}
					n += len(batch)
				}
				closeIt()
				if n != 5 {
					t.Fatalf("%s: %d objects", p, n)
				}
			}
		})
	}
	for _, bad := range []string{"file://host/inv/manifest.json", "file:inv/manifest.json", "s3:bucket/manifest.json"} {
		if _, _, err := inventory.OpenURL(ctx, bad, open, ""); !errors.Is(err, inventory.ErrURL) {
			t.Errorf("OpenURL(%q): %v, want ErrURL", bad, err)
		}
	}
}

// failingReads is a store whose reads of data files break off after a
// few bytes, as a reset connection does.
type failingReads struct {
	storage.Store
	err error
}

func (s failingReads) Get(ctx context.Context, key string) (storage.Reader, error) {
	r, err := s.Store.Get(ctx, key)
	if err != nil || !strings.Contains(key, "/data/") {
		return r, err
	}
	return &brokenReader{Reader: r, err: s.err}, nil
}

type brokenReader struct {
	storage.Reader
	err  error
	read int
}

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.read >= 16 {
		return 0, b.err
	}
	n, err := b.Reader.Read(p[:min(len(p), 16-b.read)])
	b.read += n
	return n, err
}

// A data file whose read breaks off in the store is the store's error
// (transient here), not an invalid report: it said "invalid S3
// inventory", so a retryable timeout looked like a broken report.
func TestDataFileReadErrorIsTheStores(t *testing.T) {
	ctx := context.Background()
	for _, format := range []string{"CSV", "Parquet"} {
		dest := storage.NewMem(nil)
		key, err := inventory.Write(ctx, dest, "inv", "cache", format, time.Now(), objects(10), 0)
		if err != nil {
			t.Fatal(err)
		}
		cause := context.DeadlineExceeded
		r, err := inventory.Open(ctx, failingReads{dest, cause}, key, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var got error
		for _, err := range r.Objects(ctx) {
			if err != nil {
				got = err
				break
			}
		}
		if got == nil || errors.Is(got, inventory.ErrInvalid) || !errors.Is(got, cause) || !storage.IsTransient(got) {
			t.Errorf("%s: a read that broke off: %v (invalid %v, transient %v), want the store's transient error",
				format, got, errors.Is(got, inventory.ErrInvalid), storage.IsTransient(got))
		}
	}
}
