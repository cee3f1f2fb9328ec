package testenv_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

func TestPKIAndNginxMTLS(t *testing.T) {
	pki := testenv.PKI(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, base, side := testenv.NginxMTLS(t, pki, root, []string{"writer"}, []string{"writer", "reader"})

	client := func(c *testenv.Cert) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(c)}}
	}
	do := func(c *http.Client, method, url, body string) (int, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	w, r := pki.Client("writer"), pki.Client("reader")
	cases := []struct {
		name   string
		client *http.Client
		method string
		want   int // 0: TLS handshake must fail
	}{
		{"writer GET", client(&w), "GET", 200},
		{"reader GET", client(&r), "GET", 200},
		{"writer PUT", client(&w), "PUT", 201},
		{"reader PUT", client(&r), "PUT", 403},
		{"no cert", client(nil), "GET", 400},
		{"expired", client(&pki.Expired), "GET", 0},
		{"foreign CA", client(&pki.Foreign), "GET", 0},
	}
	for _, c := range cases {
		url := base + "/nix-cache-info"
		if c.method == "PUT" {
			url = base + "/x/" + strings.ReplaceAll(c.name, " ", "-")
		}
		code, err := do(c.client, c.method, url, "hello")
		if c.want == 0 {
			// nginx with ssl_verify_client on answers 400 for a bad cert.
			if err == nil && code != 400 {
				t.Errorf("%s: got %d, want a refusal", c.name, code)
			}
			continue
		}
		if err != nil || code != c.want {
			t.Errorf("%s: got %d %v, want %d", c.name, code, err, c.want)
		}
	}
	if got, err := os.ReadFile(filepath.Join(root, "x", "writer-PUT")); err != nil || string(got) != "hello" {
		t.Errorf("writer PUT content %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(root, "x", "reader-PUT")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reader PUT landed: %v", err)
	}
	// Sidecars: plain HTTP in, client cert out.
	if code, err := do(http.DefaultClient, "PUT", side["writer"]+"/x/via-sidecar", "s"); err != nil || code != 201 {
		t.Errorf("writer sidecar PUT: %d %v", code, err)
	}
	if code, err := do(http.DefaultClient, "PUT", side["reader"]+"/x/via-reader", "s"); err != nil || code != 403 {
		t.Errorf("reader sidecar PUT: %d %v", code, err)
	}
	// An https client that does not trust the CA fails the handshake.
	bad := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{w.TLS}}}}
	if _, err := do(bad, "GET", base+"/nix-cache-info", ""); err == nil {
		t.Error("untrusted server certificate accepted")
	}
}

func TestNixBuildPushSubstitute(t *testing.T) {
	n := testenv.Nix(t)
	paths := n.BuildAttrs(`rec {
  a = mk "tenv-a" "mkdir $out; echo a > $out/a";
  b = mk "tenv-b" "echo building b; mkdir $out; echo ${a} > $out/ref";
}`)
	a, b := paths["a"], paths["b"]
	if a == "" || b == "" || a == b {
		t.Fatalf("paths %v", paths)
	}
	sk, pk := n.GenerateKey("tenv-1")
	cache := t.TempDir()
	url := "file://" + cache + "?compression=zstd&secret-key=" + sk
	if err := n.CopyTo(url, b); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, b} {
		if _, err := os.Stat(filepath.Join(cache, testenv.StoreHash(p)+".narinfo")); err != nil {
			t.Errorf("narinfo of %s: %v", p, err)
		}
	}
	drv := n.Deriver(b)
	if err := n.CopyLogTo("file://"+cache, drv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cache, "log", filepath.Base(drv))); err != nil {
		t.Errorf("log: %v", err)
	}
	store := n.NewStore()
	if err := n.SubstituteFrom("file://"+cache, store, pk, b); err != nil {
		t.Fatal(err)
	}
	got, err := n.Closure(store, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("closure in fresh store: %v", got)
	}
	// The wrong key must be refused: proves signatures are checked.
	_, otherPK := n.GenerateKey("tenv-other")
	if err := n.SubstituteFrom("file://"+cache, n.NewStore(), otherPK, b); err == nil {
		t.Error("substitution with the wrong public key succeeded")
	}
}

func TestCoroutineRecognised(t *testing.T) {
	calls := 0
	err := testenv.RetryCoroutine(3, func() error {
		calls++
		return &testenv.NixError{Args: []string{"nix", "copy"}, ExitCode: 1, Stderr: "error: coroutine has finished\n"}
	})
	if calls != 3 || !errors.Is(err, testenv.ErrCoroutineFinished) {
		t.Errorf("calls %d err %v", calls, err)
	}
	calls = 0
	err = testenv.RetryCoroutine(3, func() error {
		calls++
		return &testenv.NixError{Args: []string{"nix", "copy"}, ExitCode: 1, Stderr: "error: path is not valid\n"}
	})
	if calls != 1 || errors.Is(err, testenv.ErrCoroutineFinished) {
		t.Errorf("other error retried: calls %d err %v", calls, err)
	}
}

func TestKissBinary(t *testing.T) {
	res := testenv.RunKiss(t, nil, "--version")
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "kiss") {
		t.Errorf("kiss --version: %+v", res)
	}
}
