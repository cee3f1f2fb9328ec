package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kiss-cache/kiss/gateway"
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
	gw, _ := gateway.New(st, gateway.Config{Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	url := srv.URL + "/" + p.narinfoKey()
	b.ReportAllocs()
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
