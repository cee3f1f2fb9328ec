package nixos_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestPublishWithRealKiss runs the generated kiss-publish with the real
// `kiss with-lock` and the real `nix copy` (only `nix build` of the flake
// is faked: it prints a path built beforehand), into a file:// cache
// (local mode) and into an S3 bucket on versitygw (through with-lock's
// ephemeral endpoint). The closure must land signed, the marker must name
// the path, and no lease may be left behind; a failing push must leave no
// marker.
func TestPublishWithRealKiss(t *testing.T) {
	bucket := testenv.VersitygwBucket(t) // first: it sets AWS_* for the nix env below
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	out := nix.Build(`mk "kiss-publish-system" "mkdir $out; echo system >$out/marker-test"`)
	secret, _ := nix.GenerateKey("kiss-publish-test")

	tools := t.TempDir()
	if err := os.Symlink(kiss, filepath.Join(tools, "kiss")); err != nil {
		t.Fatal(err)
	}
	realNix, err := exec.LookPath("nix")
	if err != nil {
		t.Fatal(err)
	}
	fake := fmt.Sprintf(`#!/bin/sh
case "$*" in
  *" build "*) echo %s ;;
  *"copy --to"*"/fail"*) echo "push refused" >&2; exit 1 ;;
  *) exec %s "$@" ;;
esac
`, out, realNix)
	if err := os.WriteFile(filepath.Join(tools, "nix"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range nix.Env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}

	narinfo := testenv.StoreHash(out) + ".narinfo"
	check := func(t *testing.T, root string, run scriptRun) {
		t.Helper()
		if run.code != 0 {
			t.Fatalf("kiss-publish: exit %d\nstderr:\n%s", run.code, run.stderr)
		}
		if got, err := os.ReadFile(filepath.Join(root, "gcroots", "web1")); err != nil || string(got) != out+"\n" {
			t.Errorf("marker: %v %q, want %q", err, got, out+"\n")
		}
		ni, err := os.ReadFile(filepath.Join(root, narinfo))
		if err != nil || !strings.Contains(string(ni), "Sig: kiss-publish-test:") || !strings.Contains(string(ni), "Compression: zstd") {
			t.Errorf("narinfo: %v\n%s", err, ni)
		}
		leases, _ := os.ReadDir(filepath.Join(root, "gcroots", ".lock"))
		if len(leases) != 0 {
			t.Errorf("leases left behind: %v", leases)
		}
	}

	t.Run("file", func(t *testing.T) {
		cache := t.TempDir()
		r := mustEval(t, nix, fmt.Sprintf(`{ publish = {
			enable = true; cacheDir = %s; secretKeyFile = %s;
			systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
		}; }`, nixString(cache), nixString(secret)))
		check(t, cache, runScript(t, r.Scripts["kiss-publish"], tools, env))
	})

	t.Run("s3", func(t *testing.T) {
		r := mustEval(t, nix, fmt.Sprintf(`{ publish = {
			enable = true; store = %s; secretKeyFile = %s;
			systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
		}; }`, nixString(bucket.URL), nixString(secret)))
		check(t, bucket.Dir, runScript(t, r.Scripts["kiss-publish"], tools, env))
	})

	t.Run("failed push writes no marker", func(t *testing.T) {
		cache := t.TempDir() + "/fail"
		r := mustEval(t, nix, fmt.Sprintf(`{ publish = {
			enable = true; cacheDir = %s;
			systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
		}; }`, nixString(cache)))
		run := runScript(t, r.Scripts["kiss-publish"], tools, env)
		if run.code == 0 || !strings.Contains(run.stderr, "publish failed: web1") {
			t.Errorf("failed push: exit %d stderr %q", run.code, run.stderr)
		}
		if _, err := os.Stat(filepath.Join(cache, "gcroots", "web1")); !os.IsNotExist(err) {
			t.Errorf("marker written after a failed push: %v", err)
		}
		leases, _ := os.ReadDir(filepath.Join(cache, "gcroots", ".lock"))
		if len(leases) != 0 {
			t.Errorf("leases left behind: %v", leases)
		}
	})
}

// TestPublishThroughNginxBackend is the nginx backend's remote publish:
// kiss-publish on a builder runs the real `kiss with-lock` against
// https://cache/gcroots/web1 with a writer certificate; the lease goes
// through nginx to the lease gateway, `nix copy` (Nix 2.8, no client
// certificates) pushes through with-lock's ephemeral endpoint, which
// uploads through nginx's WebDAV, and the marker lands through the gateway.
func TestPublishThroughNginxBackend(t *testing.T) {
	nix := testenv.Nix(t)
	pki := testenv.PKI(t)
	kiss := testenv.KissBinary(t)
	cache := t.TempDir()
	base := startNginxLeaseGateway(t, nix, pki, cache, "CN=writer")
	out := nix.Build(`mk "kiss-publish-remote" "mkdir $out; echo remote >$out/x"`)
	secret, _ := nix.GenerateKey("kiss-publish-remote")
	writer := pki.Client("writer")

	tools := t.TempDir()
	if err := os.Symlink(kiss, filepath.Join(tools, "kiss")); err != nil {
		t.Fatal(err)
	}
	realNix, err := exec.LookPath("nix")
	if err != nil {
		t.Fatal(err)
	}
	fake := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *\" build \"*) echo %s ;; *) exec %s \"$@\" ;; esac\n", out, realNix)
	if err := os.WriteFile(filepath.Join(tools, "nix"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range nix.Env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	r := mustEval(t, nix, fmt.Sprintf(`{ publish = {
		enable = true; store = %s; secretKeyFile = %s;
		tlsCertificate = %s; tlsPrivateKey = %s; tlsCACertificate = %s;
		systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
	}; }`, nixString(base), nixString(secret), nixString(writer.CertFile), nixString(writer.KeyFile), nixString(pki.CAFile)))
	run := runScript(t, r.Scripts["kiss-publish"], tools, env)
	if run.code != 0 {
		t.Fatalf("kiss-publish: exit %d\nstderr:\n%s", run.code, run.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(cache, "gcroots", "web1")); err != nil || string(got) != out+"\n" {
		t.Errorf("marker: %v %q", err, got)
	}
	ni, err := os.ReadFile(filepath.Join(cache, testenv.StoreHash(out)+".narinfo"))
	if err != nil || !strings.Contains(string(ni), "Sig: kiss-publish-remote:") {
		t.Errorf("narinfo: %v\n%s", err, ni)
	}
	if leases, _ := os.ReadDir(filepath.Join(cache, "gcroots", ".lock")); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}
}
