package nixos_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestPruneUnitRunsRealKiss runs the ExecStart the prune module generates
// with the real kiss binary on a real cache written by Nix: the flags must
// be accepted, garbage deleted, the rooted path kept and the metrics file
// written.
func TestPruneUnitRunsRealKiss(t *testing.T) {
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	cache := t.TempDir()
	paths := nix.BuildAttrs(`{
		kept = mk "kiss-module-kept" "echo kept >$out";
		garbage = mk "kiss-module-garbage" "echo garbage >$out";
	}`)
	if err := nix.CopyTo("file://"+cache, paths["kept"], paths["garbage"]); err != nil {
		t.Fatal(err)
	}
	if r := testenv.RunKiss(t, nil, "roots", "add", "file://"+cache, "web1", paths["kept"]); r.ExitCode != 0 {
		t.Fatalf("roots add: exit %d", r.ExitCode)
	}
	metrics := filepath.Join(t.TempDir(), "textfile", "kiss_prune.prom")
	if err := os.MkdirAll(filepath.Dir(metrics), 0o755); err != nil { // tmpfiles does this on NixOS
		t.Fatal(err)
	}
	r := mustEval(t, nix, fmt.Sprintf(`{ prune = {
		enable = true; cacheDir = %s; grace = "0s"; rootMaxAge = "30d";
		lockWait = "0s"; metricsFile = %s;
	}; }`, nixString(cache), nixString(metrics)))
	line := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string)
	cmd := execStart(t, line, kiss, "")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	narinfo := func(p string) string { return filepath.Join(cache, testenv.StoreHash(p)+".narinfo") }
	if _, err := os.Stat(narinfo(paths["kept"])); err != nil {
		t.Errorf("rooted path pruned: %v\n%s", err, out)
	}
	if _, err := os.Stat(narinfo(paths["garbage"])); !os.IsNotExist(err) {
		t.Errorf("garbage narinfo survived (%v)\n%s", err, out)
	}
	m, err := os.ReadFile(metrics)
	if err != nil || !strings.Contains(string(m), "kiss_prune_") {
		t.Errorf("metrics file: %v %q", err, m)
	}
}

// startServeUnit evaluates the serve module with settings (a Nix attrset
// body for services.kiss.serve, socket activation off, listening on a free
// loopback port), emulates LoadCredential (the files copied into a
// directory that replaces %d) and starts the unit's ExecStart with the real
// kiss. It returns the https base URL.
func startServeUnit(t *testing.T, nix *testenv.NixEnv, kiss, settings string) string {
	t.Helper()
	port := testenv.FreePort(t)
	r := mustEval(t, nix, fmt.Sprintf(`{ serve = { socketActivation = false; listen = [ "127.0.0.1:%d" ]; %s }; }`, port, settings))
	sc := get(t, r.Config, "systemd", "services", "kiss-serve", "serviceConfig")
	creds := t.TempDir()
	for _, c := range strs(t, get(t, sc, "LoadCredential")) {
		name, src, _ := strings.Cut(c, ":")
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(creds, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testenv.StartProcess(t, "kiss-serve", execStart(t, get(t, sc, "ExecStart").(string), kiss, creds))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitTCP(addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return "https://" + addr
}

// TestServeUnitRunsRealKiss runs the kiss-serve unit the serve module
// generates with the real kiss and checks that the flags mean what the
// module says: mTLS with the client CA, the writer DN, the announced
// priority.
func TestServeUnitRunsRealKiss(t *testing.T) {
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	pki := testenv.PKI(t)
	cache := t.TempDir()
	base := startServeUnit(t, nix, kiss, fmt.Sprintf(`
		enable = true; cacheDir = %s; hostName = "localhost";
		sslCertificate = %s; sslCertificateKey = %s; clientCA = %s;
		writers = [ "CN=writer" ]; priority = 42;`,
		nixString(cache), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile), nixString(pki.CAFile)))
	anon := newClient("anonymous", base, pki.ClientTLS(nil))
	reader := newClient("reader", base, pki.ClientTLS(ptr(pki.Client("reader"))))
	writer := newClient("writer", base, pki.ClientTLS(ptr(pki.Client("writer"))))

	code, _, body := reader.do(t, "GET", "/nix-cache-info", "", nil)
	if code != 200 || !strings.Contains(body, "Priority: 42") {
		t.Errorf("reader GET nix-cache-info: %d %q", code, body)
	}
	if code, _, _ := anon.do(t, "GET", "/nix-cache-info", "", nil); code == 200 {
		t.Error("no client certificate, yet 200")
	}
	lease := `{"version":1,"kind":"writer","nonce":"aa"}`
	inm := map[string]string{"If-None-Match": "*"}
	if code, _, _ := reader.do(t, "PUT", "/gcroots/.lock/r.1", lease, inm); code != 403 {
		t.Errorf("reader PUT lease: %d, want 403", code)
	}
	if code, _, body := writer.do(t, "PUT", "/gcroots/.lock/w.1", lease, inm); code != 201 {
		t.Errorf("writer PUT lease: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(cache, "gcroots", ".lock", "w.1")); err != nil {
		t.Errorf("lease not in the cache directory: %v", err)
	}
}

// TestServeUnitMultiRDNWriterIsExact checks that a multi-RDN writer from
// the module reaches kiss serve as one DN: "CN=writer,O=elsewhere" must not
// let a certificate "CN=writer,O=kiss-test" write (it would if the flag
// value were split at the comma into "CN=writer" and "O=elsewhere").
func TestServeUnitMultiRDNWriterIsExact(t *testing.T) {
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	pki := testenv.PKI(t)
	base := startServeUnit(t, nix, kiss, fmt.Sprintf(`
		enable = true; cacheDir = %s; hostName = "localhost";
		sslCertificate = %s; sslCertificateKey = %s; clientCA = %s;
		writers = [ "CN=writer,O=elsewhere" "CN=other,O=kiss-test" ];`,
		nixString(t.TempDir()), nixString(pki.Server.CertFile), nixString(pki.Server.KeyFile), nixString(pki.CAFile)))
	lease := `{"version":1,"kind":"writer","nonce":"aa"}`
	inm := map[string]string{"If-None-Match": "*"}
	writer := newClient("writer", base, pki.ClientTLS(ptr(pki.Client("writer"))))
	if code, _, _ := writer.do(t, "PUT", "/gcroots/.lock/w.1", lease, inm); code != 403 {
		t.Errorf("CN=writer,O=kiss-test PUT with writers [CN=writer,O=elsewhere]: %d, want 403", code)
	}
	other := newClient("other", base, pki.ClientTLS(ptr(pki.Client("other"))))
	if code, _, body := other.do(t, "PUT", "/gcroots/.lock/o.1", lease, inm); code != 201 {
		t.Errorf("CN=other,O=kiss-test PUT: %d %s, want 201", code, body)
	}
}
