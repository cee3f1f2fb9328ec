package lockproto

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// BenchmarkConfirm measures the fencing check the pruner makes before every
// delete batch (one compare-and-swap of the lease) against the baseline of
// one unconditional Put of the same body on the same store, in the same run.
//
//	go test -run '^$' -bench . -benchtime 2s ./lockproto/
func BenchmarkConfirm(b *testing.B) {
	for name, st := range benchStores(b) {
		b.Run(name+"/confirm", func(b *testing.B) {
			l, err := AcquirePrune(b.Context(), st, Options{TTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Release(b.Context())
			for b.Loop() {
				if err := l.Confirm(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/baseline-put", func(b *testing.B) {
			body := bytes.Repeat([]byte("x"), 300)
			for b.Loop() {
				if _, err := st.Put(b.Context(), "bench/plain", bytes.NewReader(body), storage.PutOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/acquire-release-writer", func(b *testing.B) {
			o := Options{TTL: time.Hour, Logger: slog.New(slog.DiscardHandler)}
			for b.Loop() {
				l, err := AcquireWriter(b.Context(), st, "bench", o)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchStores(b *testing.B) map[string]storage.Store {
	out := map[string]storage.Store{}
	st, err := storage.Open(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	out["file"] = st
	s3, err := storage.Open(b.Context(), testenv.Versitygw(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s3.Close() })
	out["versitygw"] = s3
	return out
}
