package nixos_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// applyTmpfilesAsIs runs the real `systemd-tmpfiles --create` on rules
// (on temporary paths) with their owners and groups as written.
func applyTmpfilesAsIs(t *testing.T, rules []string) {
	t.Helper()
	for _, r := range rules {
		if f := strings.Fields(r); len(f) < 2 || !strings.HasPrefix(f[1], "/tmp/") {
			t.Fatalf("tmpfiles rule %q: not a rule on a temporary path", r)
		}
	}
	file := filepath.Join(t.TempDir(), "kiss.conf")
	if err := os.WriteFile(file, []byte(strings.Join(rules, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-tmpfiles", "--create", file).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-tmpfiles --create: %v\n%s\n%s", err, out, strings.Join(rules, "\n"))
	}
}

// TestRootPruneLeavesCacheWritable: the pruner runs as root by default
// while kiss serve (or nginx and its lease gateway) owns the directory.
// A prune creates the directories kiss writes through (gcroots/.lock/ for
// its lease, .kiss/tmp/ where the file store stages every object) when
// they are missing, even when it then refuses (no roots yet), so run
// before the first push (`systemctl start kiss-prune` to try it out, or
// its timer) it left them root-owned, and every later write of the
// serving user failed with "permission denied". The modules create them,
// owned by the serving user, before anything runs.
func TestRootPruneLeavesCacheWritable(t *testing.T) {
	owner := nobodyAsRoot(t, "runs the prune as root and the serving user as nobody")
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	group, err := user.LookupGroupId(owner.Gid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)

	for name, serve := range map[string]string{
		"kiss backend": `services.kiss.user = "nobody"; services.kiss.group = %[2]s;
			services.kiss.serve = { enable = true; cacheDir = %[1]s; listen = [ "127.0.0.1:8080" ]; };`,
		"nginx backend": `services.nginx.user = "nobody"; services.nginx.group = %[2]s;
			services.kiss.serve = { enable = true; backend = "nginx"; cacheDir = %[1]s; hostName = "cache.example.org";
				sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem"; writers = [ "CN=builder-01" ]; };`,
	} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o755); err != nil { // the serving user must reach the cache
					t.Fatal(err)
				}
			}
			cache := filepath.Join(base, "cache")
			r := mustEvalConfig(t, nix, fmt.Sprintf(`{ `+serve+`
				services.kiss.prune = { enable = true; cacheDir = %[1]s; }; }`, nixString(cache), nixString(group.Name)))
			applyTmpfilesAsIs(t, strs(t, get(t, r.Config, "systemd", "tmpfiles")))

			// The prune unit as root, before any push: it refuses (no roots).
			prune := execStart(t, get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string), kiss, "")
			out, err := prune.CombinedOutput()
			if prune.ProcessState == nil || prune.ProcessState.ExitCode() != 4 {
				t.Fatalf("prune before the first push: %v, want exit 4 (no roots)\n%s", err, out)
			}

			// The serving user then writes a lease and a marker, as kiss serve or
			// the lease gateway does for a push.
			// (A copy of kiss it can execute: the test binary's directory is private.)
			exe := filepath.Join(base, "kiss")
			if b, err := os.ReadFile(kiss); err != nil || os.WriteFile(exe, b, 0o755) != nil {
				t.Fatalf("copy kiss: %v", err)
			}
			push := exec.Command(exe, "with-lock", "file://"+cache+"/gcroots/web1", "/nix/store/"+strings.Repeat("0", 32)+"-web1", "--", "true")
			push.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			if out, err := push.CombinedOutput(); err != nil {
				var tree strings.Builder
				_ = filepath.Walk(cache, func(p string, fi os.FileInfo, _ error) error {
					if fi != nil && fi.IsDir() {
						st := fi.Sys().(*syscall.Stat_t)
						fmt.Fprintf(&tree, "  %s uid %d %v\n", strings.TrimPrefix(p, cache), st.Uid, fi.Mode().Perm())
					}
					return nil
				})
				t.Fatalf("a push by the serving user after a root prune: %v\n%s\ndirectories:\n%s", err, out, tree.String())
			}
			if _, err := os.Stat(filepath.Join(cache, "gcroots", "web1")); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestPruneMetricsDirOwnedByPruneUser: with prune.user set (as the option
// advises when kiss serve owns the directory), the metrics file's directory
// the module creates must be writable by that user: kiss writes the file
// atomically (a temporary file beside it, renamed), and a prune that
// cannot write its metrics fails.
func TestPruneMetricsDirOwnedByPruneUser(t *testing.T) {
	owner := nobodyAsRoot(t, "runs the prune as nobody")
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	base := t.TempDir()
	for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cache := filepath.Join(base, "cache")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cache, uid, gid); err != nil {
		t.Fatal(err)
	}
	metrics := filepath.Join(base, "textfile", "kiss_prune.prom")
	r := mustEval(t, nix, fmt.Sprintf(`{ prune = { enable = true; cacheDir = %s; user = "nobody"; metricsFile = %s;
		extraArgs = [ "--allow-empty-roots" ]; }; }`, nixString(cache), nixString(metrics)))
	applyTmpfilesAsIs(t, strs(t, get(t, r.Config, "systemd", "tmpfiles")))
	exe := filepath.Join(base, "kiss")
	if b, err := os.ReadFile(kiss); err != nil || os.WriteFile(exe, b, 0o755) != nil {
		t.Fatalf("copy kiss: %v", err)
	}
	prune := execStart(t, get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string), exe, "")
	prune.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if out, err := prune.CombinedOutput(); err != nil {
		t.Fatalf("prune as %s with metricsFile: %v\n%s", owner.Username, err, out)
	}
	if m, err := os.ReadFile(metrics); err != nil || !strings.Contains(string(m), "kiss_prune_") {
		t.Errorf("metrics file: %v %q", err, m)
	}
}

// nobodyAsRoot is the user nobody, for a test that runs kiss as another
// user than root (what it does: why); it skips unless the test runs as root.
func nobodyAsRoot(t *testing.T, why string) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
	owner, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	return owner
}
