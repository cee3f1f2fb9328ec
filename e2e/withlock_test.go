package e2e

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

const fakePath = "/nix/store/00000000000000000000000000000000-with-lock-test"

func readMarker(t testing.TB, st storage.Store, key string) (string, bool) {
	t.Helper()
	r, err := st.Get(e2eCtx(t), key)
	if err != nil {
		return "", false
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b), true
}

func requireNoLeases(t testing.TB, st storage.Store) {
	t.Helper()
	hs, err := lockproto.List(e2eCtx(t), st, lockproto.Judging{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 0 {
		t.Fatalf("leases left behind: %v", hs)
	}
}

// TestWithLockBasics: the original's observable behaviour: marker content
// "<STORE-PATH>\n" on success, the command's exit status passed through and
// no marker on failure, exit 2 on usage errors, the lease always released.
func TestWithLockBasics(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	marker := filepath.Join(dir, "gcroots", "app")

	res := testenv.RunKiss(t, nil, "with-lock", marker, fakePath, "--", "sh", "-c", `test -n "$KISS_STORE" && echo "$KISS_STORE" > `+filepath.Join(dir, "seen"))
	if res.ExitCode != 0 {
		t.Fatalf("exit %d", res.ExitCode)
	}
	if got, _ := readMarker(t, st, "gcroots/app"); got != fakePath+"\n" {
		t.Fatalf("marker = %q", got)
	}
	if seen, _ := os.ReadFile(filepath.Join(dir, "seen")); strings.TrimSpace(string(seen)) != "file://"+dir {
		t.Fatalf("KISS_STORE = %q, want file://%s", seen, dir)
	}
	requireNoLeases(t, st)

	res = testenv.RunKiss(t, nil, "with-lock", marker+"-fail", fakePath, "--", "sh", "-c", "exit 42")
	if res.ExitCode != 42 {
		t.Fatalf("exit %d, want the command's 42", res.ExitCode)
	}
	if _, ok := readMarker(t, st, "gcroots/app-fail"); ok {
		t.Fatal("marker written for a failed command")
	}
	requireNoLeases(t, st)

	for _, args := range [][]string{
		{"with-lock", marker},                                          // no STORE-PATH
		{"with-lock", marker, fakePath, "--"},                          // no command
		{"with-lock", filepath.Join(dir, "x"), fakePath, "--", "true"}, // not under gcroots/
		{"with-lock", marker, "/tmp/not-a-store-path", "--", "true"},
		{"with-lock", marker, fakePath, "--lock-wait", "soon", "--", "true"},
		{"with-lock", filepath.Join(dir, "gcroots", ".lock", "x"), fakePath, "--", "true"},
	} {
		if res := testenv.RunKiss(t, nil, args...); res.ExitCode != 2 {
			t.Errorf("%v: exit %d, want 2", args, res.ExitCode)
		}
	}
	requireNoLeases(t, st)
}

// TestWithLockWaitsForPrune: a fresh prune lease makes with-lock wait;
// with a short --lock-wait it gives up with exit 5 naming the pruner and
// never runs the command; once the prune lease is released it proceeds.
func TestWithLockWaitsForPrune(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	quiet := slog.New(slog.DiscardHandler)
	p, err := lockproto.AcquirePrune(e2eCtx(t), st, lockproto.Options{TTL: time.Minute, Owner: "e2e-pruner", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ran := filepath.Join(dir, "ran")
	marker := filepath.Join(dir, "gcroots", "w")
	res := testenv.RunKiss(t, nil, "with-lock", "--lock-wait", "1s", marker, fakePath, "--", "touch", ran)
	if res.ExitCode != 5 || !strings.Contains(res.Stderr, "e2e-pruner") {
		t.Fatalf("exit %d (want 5), stderr must name the pruner", res.ExitCode)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("command ran while a prune held the lock")
	}

	go func() {
		time.Sleep(2 * time.Second)
		p.Release(e2eCtx(t))
	}()
	start := time.Now()
	res = testenv.RunKiss(t, nil, "with-lock", marker, fakePath, "--lock-wait", "60s", "--", "touch", ran)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d", res.ExitCode)
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("with-lock did not wait for the prune lease (%v)", el)
	}
	if _, ok := readMarker(t, st, "gcroots/w"); !ok {
		t.Fatal("no marker")
	}
	requireNoLeases(t, st)
}

// TestWithLockLeaseLost: when the writer's lease is lost while the command
// runs (here: broken from outside), the command is stopped, no marker is
// written and with-lock exits 6.
func TestWithLockLeaseLost(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	marker := filepath.Join(dir, "gcroots", "lost")
	script := `rm -f "${KISS_STORE#file://}"/gcroots/.lock/*; sleep 30; touch ` + filepath.Join(dir, "finished")
	start := time.Now()
	res := testenv.RunKiss(t, nil, "with-lock", "--lock-ttl", "3s", marker, fakePath, "--", "sh", "-c", script)
	if res.ExitCode != 6 {
		t.Fatalf("exit %d, want 6 (lease lost)", res.ExitCode)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("the command was not stopped promptly (%v)", el)
	}
	if _, ok := readMarker(t, st, "gcroots/lost"); ok {
		t.Fatal("marker written after the lease was lost")
	}
	if _, err := os.Stat(filepath.Join(dir, "finished")); err == nil {
		t.Fatal("the command ran to completion")
	}
}

// TestWithLockSignal: SIGTERM to with-lock stops the command, writes no
// marker and still releases the lease (PROTOCOL.md L2).
func TestWithLockSignal(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	cmd := kissCmd(e2eCtx(t), t, nil, "with-lock", filepath.Join(dir, "gcroots", "sig"), fakePath, "--", "sleep", "30")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if hs, _ := lockproto.List(e2eCtx(t), st, lockproto.Judging{}); len(hs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no lease appeared\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err == nil || time.Since(start) > 15*time.Second {
		t.Fatalf("with-lock after SIGTERM: %v after %v\n%s", err, time.Since(start), out.String())
	}
	if _, ok := readMarker(t, st, "gcroots/sig"); ok {
		t.Fatal("marker written after SIGTERM")
	}
	requireNoLeases(t, st)
}

// TestWithLockNixCopy: `kiss with-lock` wrapping the real `nix copy` (Nix
// 2.8) to file:// and, through the ephemeral endpoint, to versitygw; then
// the marker roots the pushed closure and a prune keeps all of it.
func TestWithLockNixCopy(t *testing.T) {
	n := testenv.Nix(t)
	out := n.BuildAttrs(dagExpr)
	app := out["app"]
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			storeURL := backendStore(t, backend)
			st := openStore(t, storeURL)
			cmd := kissCmd(e2eCtx(t), t, n.Env, "with-lock", markerURL(storeURL, "app"), app, "--lock-ttl", "20s",
				"--", "sh", "-c", `nix copy --to "$KISS_STORE" "$1"`, "sh", app)
			cmd.Dir = n.Dir
			b, err := cmd.CombinedOutput()
			t.Logf("$ kiss with-lock … nix copy (%v)\n%s", err, b)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := readMarker(t, st, "gcroots/app"); got != app+"\n" {
				t.Fatalf("marker = %q", got)
			}
			keys := closureKeys(t, n, app)
			requireKeys(t, st, keys)
			requireNoLeases(t, st)
			if res := testenv.RunKiss(t, nil, "prune", "--grace", "0s", storeURL); res.ExitCode != 0 {
				t.Fatalf("prune exited %d", res.ExitCode)
			}
			requireKeys(t, st, keys)
		})
	}
}

// TestWithLockHTTPSGateway: MARKER is an https:// URL of an mTLS `kiss
// serve`; with-lock takes its writer lease through the gateway with the
// client certificate, Nix 2.8 (no client certificates) pushes through the
// ephemeral endpoint, the marker lands through the gateway. A reader
// certificate cannot take a lease (exit 3, no command run); while a prune
// lease is held, the gateway's 503 makes with-lock wait (exit 5 when short).
func TestWithLockHTTPSGateway(t *testing.T) {
	n := testenv.Nix(t)
	pki := testenv.PKI(t)
	dir := t.TempDir()
	base := startServe(t, dir, "--tls-cert", pki.Server.CertFile, "--tls-key", pki.Server.KeyFile,
		"--client-ca", pki.CAFile, "--writer", "CN=writer,O=kiss-test")
	out := n.BuildAttrs(dagExpr)
	app := out["app"]
	w, r := pki.Client("writer"), pki.Client("reader")
	st := openStore(t, "file://"+dir)

	ran := filepath.Join(t.TempDir(), "ran")
	res := testenv.RunKiss(t, nil, "with-lock", base+"/gcroots/app", app, "--cert", r.CertFile, "--key", r.KeyFile, "--cacert", pki.CAFile,
		"--lock-wait", "2s", "--", "touch", ran)
	if res.ExitCode != 3 || !strings.Contains(res.Stderr, "403") {
		t.Fatalf("reader certificate: exit %d, want 3 with the gateway's 403", res.ExitCode)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("command ran without a lease")
	}

	quiet := slog.New(slog.DiscardHandler)
	p, err := lockproto.AcquirePrune(e2eCtx(t), st, lockproto.Options{TTL: time.Minute, Owner: "e2e-pruner", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	res = testenv.RunKiss(t, nil, "with-lock", base+"/gcroots/app", app, "--cert", w.CertFile, "--key", w.KeyFile, "--cacert", pki.CAFile,
		"--lock-wait", "1s", "--", "touch", ran)
	if res.ExitCode != 5 {
		t.Fatalf("with a prune lease held: exit %d, want 5", res.ExitCode)
	}
	p.Release(e2eCtx(t))

	cmd := kissCmd(e2eCtx(t), t, n.Env, "with-lock", base+"/gcroots/app", app,
		"--cert", w.CertFile, "--key", w.KeyFile, "--cacert", pki.CAFile, "--lock-ttl", "20s",
		"--", "sh", "-c", `nix copy --to "$KISS_STORE" "$1"`, "sh", app)
	cmd.Dir = n.Dir
	b, err := cmd.CombinedOutput()
	t.Logf("$ kiss with-lock https://… nix copy (%v)\n%s", err, b)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readMarker(t, st, "gcroots/app"); got != app+"\n" {
		t.Fatalf("marker = %q", got)
	}
	requireKeys(t, st, closureKeys(t, n, app))
	requireNoLeases(t, st)
}
