// Package list benchmarks listing a 100k-key cache: kiss's file:// and
// s3:// (versitygw) drivers against find(1) over the same directory, in the
// same run. e2e/bench/list.sh runs it and prints the ratios.
package list

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

const nixAlphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// keyCount is KISS_BENCH_LIST_KEYS, default 100000.
func keyCount(b *testing.B) int {
	n := 100000
	if v := os.Getenv("KISS_BENCH_LIST_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 || n > 2_000_000 {
			b.Fatalf("KISS_BENCH_LIST_KEYS=%q: want 2..2000000", v)
		}
	}
	return n
}

func hash(i, n int) string {
	b := make([]byte, n)
	x := uint64(i)*0x9E3779B97F4A7C15 + 12345
	for j := range b {
		x ^= x >> 29
		x *= 0xBF58476D1CE4E5B9
		b[j] = nixAlphabet[x%32]
	}
	return string(b)
}

// populate writes n keys shaped like a Nix cache straight into dir: half
// <hash>.narinfo at the top, half nar/<filehash>.nar.zst.
func populate(b *testing.B, dir string, n int) {
	b.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				var p string
				var body []byte
				if i%2 == 0 {
					p = filepath.Join(dir, hash(i, 32)+".narinfo")
					body = []byte(fmt.Sprintf("StorePath: /nix/store/%s-pkg-%d\nURL: nar/%s.nar.zst\n", hash(i, 32), i, hash(i+1, 52)))
				} else {
					p = filepath.Join(dir, "nar", hash(i, 52)+".nar.zst")
					body = make([]byte, 64+i%512)
				}
				if err := os.WriteFile(p, body, 0o644); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func countLines(b *testing.B, args ...string) int {
	b.Helper()
	cmd := exec.Command("find", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewReaderSize(out, 1<<20)
	n := 0
	for {
		line, err := sc.ReadSlice('\n')
		if len(line) > 0 {
			n++
		}
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	return n
}

func listCount(b *testing.B, st storage.Store) int {
	b.Helper()
	n := 0
	for obj, err := range st.List(context.Background(), "") {
		if err != nil {
			b.Fatal(err)
		}
		if obj.Size < 0 || obj.ModTime.IsZero() {
			b.Fatalf("bad object %+v", obj)
		}
		n++
	}
	return n
}

func report(b *testing.B, keys int) {
	b.ReportMetric(float64(keys)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(0, "ns/op") // keys/s is the figure; ns/op depends on the key count
}

func BenchmarkList(b *testing.B) {
	n := keyCount(b)
	dir := b.TempDir()
	populate(b, dir, n)
	check := func(b *testing.B, got int) {
		if got != n {
			b.Fatalf("listed %d keys, want %d", got, n)
		}
	}
	b.Run("find", func(b *testing.B) {
		for range b.N {
			check(b, countLines(b, dir, "-type", "f"))
		}
		report(b, n)
	})
	b.Run("find-printf", func(b *testing.B) {
		for range b.N {
			check(b, countLines(b, dir, "-type", "f", "-printf", `%P %s %T@\n`))
		}
		report(b, n)
	})
	b.Run("file", func(b *testing.B) {
		st, err := storage.OpenFile(dir)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			check(b, listCount(b, st))
		}
		report(b, n)
	})
	if os.Getenv("KISS_BENCH_LIST_S3") == "0" {
		return
	}
	bucket := testenv.VersitygwBucket(b)
	// versitygw's posix backend serves plain files in the bucket directory
	// as objects, so the fixture is written there directly instead of
	// through 100k PUTs.
	st, err := storage.Open(context.Background(), bucket.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if os.Getenv("KISS_BENCH_LIST_S3_PUT") == "1" {
		// The honest but slow way: every object through PutObject, so
		// versitygw has its own metadata (ETag xattr) for each.
		uploadAll(b, st, dir)
	} else {
		populate(b, bucket.Dir, n)
	}
	b.Run("s3-versitygw", func(b *testing.B) {
		for range b.N {
			check(b, listCount(b, st))
		}
		report(b, n)
	})
	b.Run("find-bucket-dir", func(b *testing.B) {
		for range b.N {
			got := countLines(b, bucket.Dir, "-type", "f", "-not", "-path", "*/.sgwtmp/*")
			check(b, got)
		}
		report(b, n)
	})
}

// uploadAll PUTs every file of dir into st (16 at a time).
func uploadAll(b *testing.B, st storage.Store, dir string) {
	b.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	next := make(chan string)
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				f, err := os.Open(filepath.Join(dir, filepath.FromSlash(k)))
				if err == nil {
					_, err = st.Put(context.Background(), k, f, storage.PutOptions{})
					f.Close()
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, k := range keys {
		next <- k
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
