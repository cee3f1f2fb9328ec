package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/valyala/fasthttp"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// BenchmarkNarinfoGET is the per-request cost of a small GET from a file://
// store over one keep-alive connection (the narinfo_all pattern).
func BenchmarkNarinfoGET(b *testing.B) {
	st, err := storage.OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p := newPath("bench")
	st.Put(context.Background(), p.narinfoKey(), bytesReader(p.narinfo()), storage.PutOptions{})
	b.ReportAllocs()
	benchGET(b, st, p.narinfoKey())
}

// benchGET serves st through the gateway and GETs key b.N times over one
// keep-alive connection.
func benchGET(b *testing.B, st storage.Store, key string) {
	gw, _ := gateway.New(st, gateway.Config{Logger: slog.New(slog.DiscardHandler)})
	srv := startServer(b, gw)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	url := srv.URL + "/" + key
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatal(res.Status)
		}
	}
}

// BenchmarkNarinfoGETS3 is the same request over an s3:// store (versitygw,
// started by testenv), beside its baseline: the object read directly with
// the AWS SDK, as e2e/bench/serve.sh compares them.
func BenchmarkNarinfoGETS3(b *testing.B) {
	st, bk := testenv.VersitygwStore(b)
	ctx := context.Background()
	p := newPath("bench")
	if _, err := st.Put(ctx, p.narinfoKey(), bytesReader(p.narinfo()), storage.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		cl := bk.Server.Client()
		for b.Loop() {
			out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bk.Name), Key: aws.String(p.narinfoKey())})
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, out.Body)
			out.Body.Close()
		}
	})
	b.Run("gateway", func(b *testing.B) { benchGET(b, st, p.narinfoKey()) })
}

// BenchmarkHandlerNarinfo is the gateway's own CPU per narinfo GET from a
// file:// store, without any network: the handler called on a prepared
// request (what kiss adds on top of the HTTP server).
func BenchmarkHandlerNarinfo(b *testing.B) {
	st, err := storage.OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p := newPath("bench")
	st.Put(context.Background(), p.narinfoKey(), bytesReader(p.narinfo()), storage.PutOptions{})
	gw, _ := gateway.New(st, gateway.Config{Logger: slog.New(slog.DiscardHandler)})
	h := gateway.HandlerForBenchmark(gw)
	var req fasthttp.Request
	req.SetRequestURI("http://cache/" + p.narinfoKey())
	var rc fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		rc.Init(&req, nil, nil)
		h(&rc)
		if rc.Response.StatusCode() != 200 {
			b.Fatal(rc.Response.StatusCode())
		}
	}
}
