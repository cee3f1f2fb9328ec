package gateway_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

func TestEphemeral(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storage.NewMem(nil)
	base, stop, err := gateway.Ephemeral(ctx, st, gateway.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || len(base) < len("http://127.0.0.1:1/")+32 {
		t.Fatalf("base URL %q", base)
	}
	host := base[:strings.LastIndexByte(base, '/')]
	p := newPath("e")
	put := func(url string, body string) int {
		req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := put(host+"/"+p.narKey(), "x"); c != 404 {
		t.Fatalf("write without the secret prefix: %d", c)
	}
	if c := put(host+"/wrongtoken/"+p.narKey(), "x"); c != 404 {
		t.Fatalf("write with a wrong prefix: %d", c)
	}
	if c := put(base+"/"+p.narinfoKey(), string(p.narinfo())); c != 409 {
		t.Fatalf("ephemeral endpoint does not validate: %d", c)
	}
	if c := put(base+"/"+p.narKey(), string(p.narBody())); c != 201 {
		t.Fatalf("NAR: %d", c)
	}
	if c := put(base+"/"+p.narinfoKey(), string(p.narinfo())); c != 201 {
		t.Fatalf("narinfo: %d", c)
	}
	res, err := http.Get(base + "/nix-cache-info")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("nix-cache-info %v %v", res, err)
	}
	res.Body.Close()
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := http.Get(base + "/nix-cache-info"); err == nil {
		t.Fatal("endpoint still answers after stop")
	}

	// cancelling ctx stops it too
	ctx2, cancel2 := context.WithCancel(context.Background())
	base2, stop2, err := gateway.Ephemeral(ctx2, st, gateway.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop2(context.Background())
	cancel2()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := http.Get(base2 + "/nix-cache-info"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("endpoint still answers after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
