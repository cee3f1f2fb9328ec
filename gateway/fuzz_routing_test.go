package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

// FuzzGatewayRouting sends arbitrary requests (method, URI, one header,
// body) to two gateways over one file:// cache and checks what must hold
// whatever a client sends:
//   - no panic, and no 5xx but 501/503 (the store itself never fails here);
//   - a client without write access changes nothing in the cache;
//   - even a writer never creates or changes anything outside the cache
//     root, nor any file the gateway would not list as a cache object;
//   - no response leaks a file from outside the cache root.
func FuzzGatewayRouting(f *testing.F) {
	seeds := []struct{ method, uri, hk, hv, body string }{
		{"GET", "/nix-cache-info", "", "", ""},
		{"PUT", "/nar/0000000000000000000000000000000000000000000000000000.nar", "", "", "x"},
		{"PUT", "/gcroots/web1", "If-None-Match", "*", "/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a\n"},
		{"PUT", "/gcroots/.lock/prune", "If-None-Match", "*", `{"version":1,"nonce":"ab"}`},
		{"DELETE", "/gcroots/web1", "If-Match", `"x"`, ""},
		{"GET", "/?list=1&prefix=gcroots/", "", "", ""},
		{"GET", "/%2e%2e/secret", "", "", ""},
		{"GET", "/nar/../../secret", "", "", ""},
		{"PUT", "/../outside", "", "", "pwned"},
		{"PUT", "/nar/%2e%2e/%2e%2e/outside", "Content-Length", "5", "pwned"},
		{"GET", "/?kiss=info", "", "", ""},
		{"PUT", "/x.narinfo", "Expect", "100-continue", "StorePath: /nix/store/x\n"},
		{"GET", "/metrics", "Range", "bytes=0-10", ""},
		{"POST", "/", "Transfer-Encoding", "chunked", "0\r\n\r\n"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.uri, s.hk, s.hv, []byte(s.body))
	}
	// On tmpfs where there is one: the writer's fsyncs cost nothing there.
	parent := f.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "kiss-fuzz-"); err == nil {
		parent = d
		f.Cleanup(func() { os.RemoveAll(d) })
	}
	root := filepath.Join(parent, "cache")
	secret := filepath.Join(parent, "secret")
	if err := os.WriteFile(secret, []byte("TOP-SECRET-OUTSIDE-THE-CACHE"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		f.Fatal(err)
	}
	st, err := storage.OpenFile(root)
	if err != nil {
		f.Fatal(err)
	}
	seed := map[string]string{
		"nix-cache-info": "StoreDir: /nix/store\n",
		"gcroots/base":   "/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a\n",
	}
	for k, v := range seed {
		if _, err := st.Put(context.Background(), k, strings.NewReader(v), storage.PutOptions{}); err != nil {
			f.Fatal(err)
		}
	}
	// Both gateways run as kiss serve runs them (gateway.Serve), on
	// in-memory listeners: requests go through fasthttp's parser too.
	mk := func(auth gateway.Authenticator) *fasthttputil.InmemoryListener {
		gw, err := gateway.New(st, gateway.Config{Auth: auth, MaxUploadSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			f.Fatal(err)
		}
		ln := fasthttputil.NewInmemoryListener()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = gateway.Serve(ctx, ln, gw, nil, time.Second); close(done) }()
		f.Cleanup(func() { cancel(); <-done })
		return ln
	}
	reader, writer := mk(gateway.OpenReads{}), mk(gateway.Open{})

	f.Fuzz(func(t *testing.T, method, uri, hk, hv string, body []byte) {
		if len(body) > 1<<16 || strings.ContainsAny(method+uri+hk+hv, "\r\n") {
			return // one request per connection: no smuggled second one
		}
		do := func(ln *fasthttputil.InmemoryListener) *http.Response {
			c, err := ln.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A request that announced more body than it has is left
			// waiting by the server: a second is plenty for the rest.
			_ = c.SetDeadline(time.Now().Add(time.Second))
			var b bytes.Buffer
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n", method, uri)
			if hk != "" {
				fmt.Fprintf(&b, "%s: %s\r\n", hk, hv)
			}
			if !strings.EqualFold(hk, "Content-Length") && !strings.EqualFold(hk, "Transfer-Encoding") {
				fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
			}
			b.WriteString("\r\n")
			b.Write(body)
			if _, err := c.Write(b.Bytes()); err != nil {
				return nil
			}
			br := bufio.NewReader(c)
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return nil // no (complete) answer: the server closed or waits for more
				}
				if resp.StatusCode >= 200 || resp.StatusCode < 100 {
					rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
					resp.Body = io.NopCloser(bytes.NewReader(rb))
					return resp
				}
			}
		}
		check := func(who string, resp *http.Response) {
			if resp == nil {
				return
			}
			rb, _ := io.ReadAll(resp.Body)
			code := resp.StatusCode
			if code >= 500 && code != 501 && code != 503 {
				t.Fatalf("%s %s %q (%s: %q): status %d: %s", who, method, uri, hk, hv, code, rb)
			}
			if strings.Contains(string(rb), "TOP-SECRET") {
				t.Fatalf("%s %s %q served a file from outside the cache root", who, method, uri)
			}
		}
		before := tree(t, parent)
		check("reader", do(reader))
		if after := tree(t, parent); !sameTree(before, after) {
			t.Fatalf("a client without write access changed the cache: %s %q (%s: %q)", method, uri, hk, hv)
		}
		check("writer", do(writer))
		for p := range tree(t, parent) {
			if p == "secret" {
				continue
			}
			rel, ok := strings.CutPrefix(p, "cache/")
			if !ok {
				t.Fatalf("%s %q created %s outside the cache root", method, uri, p)
			}
			if strings.HasPrefix(rel, ".kiss/tmp/") {
				continue
			}
			if err := storage.ValidateKey(rel); err != nil {
				t.Fatalf("%s %q left %s, not a valid key: %v", method, uri, rel, err)
			}
		}
		if b, err := os.ReadFile(secret); err != nil || string(b) != "TOP-SECRET-OUTSIDE-THE-CACHE" {
			t.Fatalf("%s %q changed the file outside the cache root", method, uri)
		}
	})
}

// tree maps every regular file under dir (relative, slash-separated) to its
// size and mtime.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		rel, _ := filepath.Rel(dir, p)
		m[filepath.ToSlash(rel)] = fi.ModTime().String() + "/" + fi.Mode().String() + "/" + strconv.FormatInt(fi.Size(), 10)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
