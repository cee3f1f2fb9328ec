package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// startServe runs `kiss serve --store storeURL` on a free loopback port
// and returns its base URL (https when --tls-cert is among args).
func startServe(t *testing.T, storeURL string, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(testenv.KissBinary(t), append([]string{"serve", "--store", storeURL, "--listen", addr}, args...)...)
	cmd.Env = os.Environ()
	testenv.StartProcess(t, "kiss-serve", cmd)
	if err := testenv.WaitTCP(addr, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, a := range args {
		if a == "--tls-cert" {
			return "https://" + addr
		}
	}
	return "http://" + addr
}

// closureKeys is the narinfo keys of the closure of paths (in /nix/store).
func closureKeys(t *testing.T, n *testenv.NixEnv, paths ...string) []string {
	t.Helper()
	cl, err := n.Closure("", paths...)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range cl {
		k, err := nixcache.NarInfoKeyFor(p, "")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func requireKeys(t *testing.T, st storage.Store, keys []string) {
	t.Helper()
	for _, k := range keys {
		if _, err := st.Stat(e2eCtx(t), k); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
}

// TestGatewayNixCopy: the real Nix 2.8 pushes through `kiss serve` (plain
// HTTP on loopback, --require-signature) onto file:// and onto S3
// (versitygw), then substitutes from the gateway into a fresh store with
// signatures checked.
func TestGatewayNixCopy(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			n := testenv.Nix(t)
			storeURL := backendStore(t, backend)
			sk, pk := n.GenerateKey("kiss-gw-" + n.Nonce[:6])
			out := n.BuildAttrs(dagExpr)
			base := startServe(t, storeURL, "--anonymous-writes", "--require-signature", pk)

			push := base + "?compression=zstd&write-nar-listing=true&secret-key=" + sk
			if err := n.CopyTo(push, out["app"], out["tool"]); err != nil {
				t.Fatal(err)
			}
			drv := n.Deriver(out["app"])
			if err := n.CopyLogTo(base, drv); err != nil {
				t.Fatalf("copy-log through the gateway: %v", err)
			}
			st := openStore(t, storeURL)
			keys := closureKeys(t, n, out["app"], out["tool"])
			requireKeys(t, st, keys)
			requireKeys(t, st, []string{"log/" + strings.TrimPrefix(drv, "/nix/store/"), testenv.StoreHash(out["app"]) + ".ls"})

			// unsigned pushes are refused and leave no narinfo
			if err := n.CopyTo(base, out["garbage"]); err == nil {
				t.Fatal("unsigned push accepted despite --require-signature")
			}
			if _, err := st.Stat(e2eCtx(t), testenv.StoreHash(out["garbage"])+".narinfo"); err == nil {
				t.Fatal("unsigned narinfo stored")
			}

			// substitution from the gateway, signatures checked
			dst := n.NewStore()
			if err := n.SubstituteFrom(base, dst, pk, out["app"], out["tool"]); err != nil {
				t.Fatalf("substitute from the gateway: %v", err)
			}
			got, err := n.Closure(dst, out["app"], out["tool"])
			if err != nil || len(got) != len(keys) {
				t.Fatalf("substituted closure %v (%v), want %d paths", got, err, len(keys))
			}
			_, otherPK := n.GenerateKey("kiss-gw-other-" + n.Nonce[:6])
			if err := n.SubstituteFrom(base, n.NewStore(), otherPK, out["app"]); err == nil {
				t.Fatal("substitution with the wrong trusted key succeeded")
			}

			if backend != "s3" {
				return
			}
			// Over S3, reads may go straight to the bucket: the gateway
			// answers with a redirect to a presigned URL, which Nix follows.
			redir := startServe(t, storeURL, "--redirect-reads", "all")
			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			res, err := noFollow.Get(redir + "/" + testenv.StoreHash(out["app"]) + ".narinfo")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if loc := res.Header.Get("Location"); res.StatusCode != 302 || !strings.Contains(loc, "X-Amz-Signature=") {
				t.Fatalf("--redirect-reads all: narinfo answered %d, Location %q", res.StatusCode, loc)
			}
			dst = n.NewStore()
			if err := n.SubstituteFrom(redir, dst, pk, out["app"], out["tool"]); err != nil {
				t.Fatalf("substitute through redirects to the bucket: %v", err)
			}
			if got, err := n.Closure(dst, out["app"], out["tool"]); err != nil || len(got) != len(keys) {
				t.Fatalf("substituted closure through redirects %v (%v), want %d paths", got, err, len(keys))
			}
		})
	}
}

// TestGatewayMTLSThroughEphemeral: Nix 2.8 has no client certificates, so
// it pushes and reads through the ephemeral loopback endpoint backed by the
// https client store, which authenticates to an mTLS `kiss serve`. This also
// checks that Nix 2.8 accepts a base path (the secret token) in an http
// store URL.
func TestGatewayMTLSThroughEphemeral(t *testing.T) {
	n := testenv.Nix(t)
	pki := testenv.PKI(t)
	dir := t.TempDir()
	base := startServe(t, dir, "--tls-cert", pki.Server.CertFile, "--tls-key", pki.Server.KeyFile,
		"--client-ca", pki.CAFile, "--writer", "CN=writer,O=kiss-test")
	sk, pk := n.GenerateKey("kiss-mtls-" + n.Nonce[:6])
	out := n.BuildAttrs(dagExpr)
	ctx := e2eCtx(t)
	quiet := gateway.WithLogger(slog.New(slog.DiscardHandler))

	open := func(cert testenv.Cert) *httpstore.Client {
		c, err := httpstore.Open(base, httpstore.Options{CertFile: cert.CertFile, KeyFile: cert.KeyFile, CAFile: pki.CAFile})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	writer, reader := open(pki.Client("writer")), open(pki.Client("reader"))

	// the writer takes a lease over https (as kiss with-lock does) and pushes
	lease, err := lockproto.AcquireWriter(ctx, writer, "web1", lockproto.Options{Owner: "e2e"})
	if err != nil {
		t.Fatalf("writer lease over mTLS: %v", err)
	}
	eph, stop, err := gateway.Ephemeral(ctx, writer, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.CopyTo(eph+"?compression=zstd&secret-key="+sk, out["app"]); err != nil {
		t.Fatalf("nix copy through the ephemeral endpoint: %v", err)
	}
	marker := []byte(out["app"] + "\n")
	if _, err := writer.Put(ctx, "gcroots/web1", strings.NewReader(string(marker)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, "file://"+dir)
	keys := closureKeys(t, n, out["app"])
	requireKeys(t, st, append(keys, "gcroots/web1"))

	// a reader's endpoint: pushes are refused by the real gateway (403 passed
	// through), substitution works with signatures checked
	reph, rstop, err := gateway.Ephemeral(ctx, reader, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer rstop(context.Background())
	if err := n.CopyTo(reph+"?secret-key="+sk, out["tool"]); err == nil {
		t.Fatal("a reader certificate pushed")
	}
	if _, err := st.Stat(ctx, testenv.StoreHash(out["tool"])+".narinfo"); err == nil {
		t.Fatal("reader push stored a narinfo")
	}
	dst := n.NewStore()
	if err := n.SubstituteFrom(reph, dst, pk, out["app"]); err != nil {
		t.Fatalf("substitute through the reader's endpoint: %v", err)
	}
	if got, err := n.Closure(dst, out["app"]); err != nil || len(got) != len(keys) {
		t.Fatalf("substituted %v %v", got, err)
	}

	// the DN is matched whole: "CN=writer,O=elsewhere" is not this writer
	// (were the flag split at the comma, "CN=writer" alone would match)
	other := startServe(t, t.TempDir(), "--tls-cert", pki.Server.CertFile, "--tls-key", pki.Server.KeyFile,
		"--client-ca", pki.CAFile, "--writer", "CN=writer,O=elsewhere")
	wc := pki.Client("writer")
	oc, err := httpstore.Open(other, httpstore.Options{CertFile: wc.CertFile, KeyFile: wc.KeyFile, CAFile: pki.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if _, err := oc.Put(ctx, "gcroots/web1", strings.NewReader(string(marker)), storage.PutOptions{}); !errors.Is(err, httpstore.ErrForbidden) {
		t.Fatalf("writer with a different O= wrote: %v", err)
	}

	// no certificate, foreign CA, expired: refused
	for name, o := range map[string]httpstore.Options{
		"none":    {CAFile: pki.CAFile},
		"foreign": {CertFile: pki.Foreign.CertFile, KeyFile: pki.Foreign.KeyFile, CAFile: pki.CAFile},
		"expired": {CertFile: pki.Expired.CertFile, KeyFile: pki.Expired.KeyFile, CAFile: pki.CAFile},
	} {
		c, err := httpstore.Open(base, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Stat(ctx, "nix-cache-info"); err == nil {
			t.Errorf("%s certificate: read allowed", name)
		}
		c.Close()
	}
}

// TestGatewaySocketActivationAndShutdown: under systemd socket activation
// (LISTEN_FDS) kiss serve uses the passed socket, and on SIGTERM it stops
// accepting but lets a download in flight finish, then exits 0.
func TestGatewaySocketActivationAndShutdown(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 32<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.MkdirAll(dir+"/nar", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/nar/big.nar", big, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	// sh's $$ is the PID kiss will have after exec, as systemd sets it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --store "$1" --listen 127.0.0.1:1`, testenv.KissBinary(t), dir)
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	p := testenv.StartProcess(t, "kiss-serve", cmd)
	f.Close()
	if err := testenv.WaitTCP(addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + addr + "/nar/big.nar")
	if err != nil {
		t.Fatalf("GET through the activated socket: %v", err)
	}
	defer res.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(res.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the server is shutting down now
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("new connections accepted after SIGTERM")
	}
	rest, err := io.ReadAll(res.Body)
	if err != nil || len(first)+len(rest) != len(big) || !bytes.Equal(append(first, rest...), big) {
		t.Fatalf("download in flight during shutdown: %d bytes, %v", len(first)+len(rest), err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("kiss serve did not exit after SIGTERM")
	}
	if _, werr := p.Exited(); werr != nil {
		t.Fatalf("kiss serve exit after SIGTERM: %v", werr)
	}
}

// TestGatewayUpstream: `kiss serve --upstream` in front of an nginx cache
// that Nix pushed to; a fresh store substitutes through kiss with
// signatures checked, and kiss keeps what it fetched (NARs and, after their
// NARs, narinfos).
func TestGatewayUpstream(t *testing.T) {
	n := testenv.Nix(t)
	upDir := t.TempDir()
	sk, pk := n.GenerateKey("kiss-up-" + n.Nonce[:6])
	out := n.BuildAttrs(dagExpr)
	if err := n.CopyTo("file://"+upDir+"?compression=zstd&secret-key="+sk, out["app"]); err != nil {
		t.Fatal(err)
	}
	_, upURL := testenv.NginxStatic(t, upDir, false)
	localDir := t.TempDir()
	base := startServe(t, localDir, "--upstream", upURL)
	dst := n.NewStore()
	if err := n.SubstituteFrom(base, dst, pk, out["app"]); err != nil {
		t.Fatalf("substitute through kiss --upstream: %v", err)
	}
	keys := closureKeys(t, n, out["app"])
	st := openStore(t, "file://"+localDir)
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range keys {
		for {
			if _, err := st.Stat(e2eCtx(t), k); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never stored from upstream", k)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// every stored narinfo has its NAR (I2)
	for o, err := range st.List(e2eCtx(t), "") {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(o.Key, ".narinfo") {
			continue
		}
		rd, err := st.Get(e2eCtx(t), o.Key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rd)
		rd.Close()
		ni, err := nixcache.ParseNarInfo(b, "")
		if err != nil {
			t.Fatal(err)
		}
		nk, _ := ni.NarKey()
		if _, err := st.Stat(e2eCtx(t), nk); err != nil {
			t.Errorf("%s stored without its NAR %s: %v", o.Key, nk, err)
		}
	}
}
