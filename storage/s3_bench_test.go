package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

const (
	benchSmallKey = "0123456789abcdfghijklmnpqrsvwxyz.narinfo"
	benchLargeKey = "nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar.zst"
	benchLarge    = 8 << 20
	benchConc     = 16
	copyBlock     = 64 << 10
)

// discard hides io.Discard's ReadFrom, so io.CopyBuffer reads with our buffer.
var discard = struct{ io.Writer }{io.Discard}

// processCPU is the CPU time this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs op b.N times (b.Loop) and reports allocations and
// client-cpu-ns/op.
func loop(b *testing.B, op func()) {
	b.ReportAllocs()
	start := processCPU(b)
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "client-cpu-ns/op")
}

// BenchmarkS3Read compares the s3:// driver's read path (Get, Stat, large
// reads, 16 concurrent large reads) with bare AWS SDK calls against the same
// versitygw. Run it with versitygw on PATH:
//
//	export PATH=$PATH:$(go env GOPATH)/bin
//	KISS_REQUIRE_S3=1 go test -run '^$' -bench S3Read -benchmem ./storage/
//
// Sub-benchmarks, per operation:
//
//	sdk           the test server's own SDK client (testenv: BaseEndpoint)
//	sdk-kiss      the same call on the SDK client inside the store (kiss's
//	              configuration: retryer, endpoint, request counter)
//	store         the storage.Store method
//
// store ÷ sdk-kiss is what the driver itself adds per request; sdk-kiss ÷
// sdk is what the client configuration costs. The c16 benchmarks also
// report new-conns/op: TCP connections opened per request (0 when the
// client's idle pool keeps them all). client-cpu-ns/op is the CPU time (user
// and system) of this test process per operation: versitygw runs in its own
// process, so this is the client side's cost alone, which wall time (shared
// with the server on a small machine) hides.
func BenchmarkS3Read(b *testing.B) {
	st, bk := testenv.VersitygwStore(b)
	ctx := context.Background()
	small := make([]byte, 1024)
	copy(small, "StorePath: /nix/store/0123456789abcdfghijklmnpqrsvwxyz-bench\nURL: nar/x.nar.zst\n")
	large := make([]byte, benchLarge)
	rand.Read(large)
	for k, body := range map[string][]byte{benchSmallKey: small, benchLargeKey: large} {
		if _, err := st.Put(ctx, k, bytes.NewReader(body), storage.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	clients := []struct {
		name string
		cl   *s3.Client
	}{{"sdk", bk.Server.Client()}, {"sdk-kiss", storage.S3ClientOf(st)}}

	// Large bodies are copied out in 64 KiB blocks, as the gateway copies
	// a NAR to its client.
	sdkGet := func(b *testing.B, ctx context.Context, buf []byte, cl *s3.Client, key string) int64 {
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bk.Name), Key: aws.String(key)})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(discard, out.Body, buf)
		out.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	storeGet := func(b *testing.B, ctx context.Context, buf []byte, key string) int64 {
		r, err := st.Get(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(discard, r, buf)
		r.Close()
		if err != nil {
			b.Fatal(err)
		}
		return n
	}

	b.Run("get", func(b *testing.B) {
		for _, c := range clients {
			b.Run(c.name, func(b *testing.B) {
				loop(b, func() { sdkReadAll(b, ctx, c.cl, bk.Name, benchSmallKey) })
			})
		}
		b.Run("store", func(b *testing.B) {
			loop(b, func() { storeReadAll(b, ctx, st, benchSmallKey) })
		})
	})

	b.Run("head", func(b *testing.B) {
		for _, c := range clients {
			b.Run(c.name, func(b *testing.B) {
				loop(b, func() {
					if _, err := c.cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bk.Name), Key: aws.String(benchSmallKey)}); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
		b.Run("store", func(b *testing.B) {
			loop(b, func() {
				if _, err := st.Stat(ctx, benchSmallKey); err != nil {
					b.Fatal(err)
				}
			})
		})
	})

	b.Run("large", func(b *testing.B) {
		for _, c := range clients {
			b.Run(c.name, func(b *testing.B) {
				b.SetBytes(benchLarge)
				buf := make([]byte, copyBlock)
				loop(b, func() { sdkGet(b, ctx, buf, c.cl, benchLargeKey) })
			})
		}
		b.Run("store", func(b *testing.B) {
			b.SetBytes(benchLarge)
			buf := make([]byte, copyBlock)
			loop(b, func() { storeGet(b, ctx, buf, benchLargeKey) })
		})
	})

	// benchConc readers at once, as a gateway serving concurrent NAR
	// downloads; new-conns/op counts the connections each request opened.
	parallel := func(b *testing.B, get func(b *testing.B, ctx context.Context, buf []byte)) {
		var fresh atomic.Int64
		pctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if !ci.Reused {
				fresh.Add(1)
			}
		}})
		b.SetBytes(benchLarge)
		b.ReportAllocs()
		b.SetParallelism((benchConc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		start := processCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, copyBlock)
			for pb.Next() {
				get(b, pctx, buf)
			}
		})
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "client-cpu-ns/op")
		b.ReportMetric(float64(fresh.Load())/float64(b.N), "new-conns/op")
	}
	b.Run("large-c16", func(b *testing.B) {
		for _, c := range clients {
			b.Run(c.name, func(b *testing.B) {
				parallel(b, func(b *testing.B, ctx context.Context, buf []byte) { sdkGet(b, ctx, buf, c.cl, benchLargeKey) })
			})
		}
		b.Run("store", func(b *testing.B) {
			parallel(b, func(b *testing.B, ctx context.Context, buf []byte) { storeGet(b, ctx, buf, benchLargeKey) })
		})
	})
}

// BenchmarkS3ReadOverhead measures what the driver adds to an SDK call
// without versitygw's own cost and noise: the server is an in-process
// loopback handler that answers every GET and HEAD with the same canned
// 1 KiB object. Only the difference store − sdk-kiss means anything here
// (both sides of the HTTP exchange run in this process).
//
//	go test -run '^$' -bench S3ReadOverhead -benchmem ./storage/
func BenchmarkS3ReadOverhead(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(http.TimeFormat)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if strings.Count(r.URL.Path, "/") < 2 { // HeadBucket
			return
		}
		h.Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		h.Set("Last-Modified", mod)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	}))
	defer srv.Close()
	b.Setenv("AWS_ACCESS_KEY_ID", testenv.S3AccessKey)
	b.Setenv("AWS_SECRET_ACCESS_KEY", testenv.S3SecretKey)
	b.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx := context.Background()
	st, err := storage.Open(ctx, "s3://bench?region=us-east-1&endpoint="+url.QueryEscape(srv.URL))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cl := storage.S3ClientOf(st)
	b.Run("get/sdk-kiss", func(b *testing.B) {
		loop(b, func() { sdkReadAll(b, ctx, cl, "bench", benchSmallKey) })
	})
	b.Run("get/store", func(b *testing.B) {
		loop(b, func() { storeReadAll(b, ctx, st, benchSmallKey) })
	})
	b.Run("head/sdk-kiss", func(b *testing.B) {
		loop(b, func() {
			if _, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bench"), Key: aws.String(benchSmallKey)}); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("head/store", func(b *testing.B) {
		loop(b, func() {
			if _, err := st.Stat(ctx, benchSmallKey); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// sdkReadAll reads a whole object with a bare SDK GetObject.
func sdkReadAll(b *testing.B, ctx context.Context, cl *s3.Client, bucket, key string) {
	out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		b.Fatal(err)
	}
	defer out.Body.Close()
	if _, err := io.ReadAll(out.Body); err != nil {
		b.Fatal(err)
	}
}

// storeReadAll reads a whole object through the store.
func storeReadAll(b *testing.B, ctx context.Context, st storage.Store, key string) {
	r, err := st.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); err != nil {
		b.Fatal(err)
	}
}
