package nixos_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// typicalHosts are the configurations in nixos/tests/hosts: what a cache,
// a builder and a target look like.
var typicalHosts = []string{"cache", "gateway-s3", "builder", "target", "tor-client"}

func hostConfig(name string) string {
	return "import " + filepath.Join(testenv.ModuleRoot(), "nixos", "tests", "hosts", name+".nix")
}

// fakeStorePath matches the stub packages' store paths.
var fakeStorePath = regexp.MustCompile(`/nix/store/0{32}-([a-z0-9-]+)/bin/([a-z0-9-]+)`)

// writeUnits writes a host's kiss unit files (rendered as NixOS writes
// them) into a directory, with the stub packages' executables replaced by
// stand-ins that exist, so systemd can check them. nginx.service and
// tor.service are additions to NixOS's own units, not whole units: left out.
func writeUnits(t *testing.T, r *evalResult) string {
	t.Helper()
	dir := t.TempDir()
	bin := t.TempDir()
	files := get(t, r.Config, "unitFiles").(map[string]any)
	for name, u := range files {
		if !strings.HasPrefix(name, "kiss-") {
			continue
		}
		text := get(t, u, "text").(string)
		text = fakeStorePath.ReplaceAllStringFunc(text, func(p string) string {
			exe := filepath.Join(bin, fakeStorePath.FindStringSubmatch(p)[2])
			if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			return exe
		})
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// verifyUnits runs the real `systemd-analyze verify` on every unit file in
// dir and returns what it reported (nothing when all is well).
func verifyUnits(t *testing.T, dir string) string {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze (Debian package systemd): %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, "./"+e.Name())
	}
	sort.Strings(names)
	cmd := exec.Command(sa, append([]string{"verify", "--man=no"}, names...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil && len(out) == 0 {
		return fmt.Sprintf("systemd-analyze verify: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestTypicalHostsUnitsVerify evaluates each typical host with the real
// module system, and checks every kiss unit it gets with the real
// `systemd-analyze verify` (unknown directives, bad values, calendar
// expressions, missing executables, dependencies on missing units). A
// unit made invalid on purpose must be caught, so a silent verifier cannot
// pass the test.
func TestTypicalHostsUnitsVerify(t *testing.T) {
	nix := testenv.Nix(t)
	for _, h := range typicalHosts {
		t.Run(h, func(t *testing.T) {
			r := mustEvalConfig(t, nix, hostConfig(h))
			dir := writeUnits(t, r)
			if out := verifyUnits(t, dir); out != "" {
				t.Errorf("systemd-analyze verify:\n%s", out)
			}
		})
	}
	t.Run("a bad schedule is caught", func(t *testing.T) {
		r := mustEval(t, nix, `{ prune = { enable = true; cacheDir = "/c"; schedule = "every other tuesday"; }; }`)
		if out := verifyUnits(t, writeUnits(t, r)); !strings.Contains(out, "every other tuesday") {
			t.Errorf("systemd-analyze verify let a bad OnCalendar through: %q", out)
		}
	})
	t.Run("a bad directive value is caught", func(t *testing.T) {
		r := mustEvalConfig(t, nix, `{ services.kiss.prune = { enable = true; cacheDir = "/c"; };
			systemd.services.kiss-prune.serviceConfig.ProtectSystem = "sometimes"; }`)
		if out := verifyUnits(t, writeUnits(t, r)); !strings.Contains(out, "sometimes") {
			t.Errorf("systemd-analyze verify let ProtectSystem=sometimes through: %q", out)
		}
	})
}

// TestTypicalCacheHost checks what the typical cache host (mTLS fleet on
// the nginx backend, OIDC CI on a second vhost, Tor, the pruner) gets.
func TestTypicalCacheHost(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEvalConfig(t, nix, hostConfig("cache"))
	conf := get(t, r.Config, "nginx", "appendHttpConfig").(string)
	for _, want := range []string{
		"server_name cache.example.org;", "ssl_verify_client on;", "proxy_pass http://unix:/run/kiss/leases.sock:;",
		"server_name ci-cache.example.org;", "proxy_pass http://unix:/run/kiss/serve-ci.sock:;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx config lacks %q", want)
		}
	}
	if strings.Count(conf, "listen 0.0.0.0:443 ssl;") != 2 {
		t.Errorf("both vhosts should listen on 0.0.0.0:443 (SNI picks the server):\n%s", conf)
	}
	ci := get(t, r.Config, "systemd", "services", "kiss-serve-ci", "serviceConfig")
	exec := get(t, ci, "ExecStart").(string)
	if !strings.Contains(exec, "--oidc-audience https://ci-cache.example.org") || strings.Contains(exec, "--tls-cert") || strings.Contains(exec, "--listen") {
		t.Errorf("kiss-serve-ci: %s", exec)
	}
	// Everything on the directory runs as nginx, so files stay writable to all.
	for _, unit := range []string{"kiss-serve-ci", "kiss-leases", "kiss-tor-read", "kiss-tor-write"} {
		if u := get(t, r.Config, "systemd", "services", unit, "serviceConfig", "User"); u != "nginx" {
			t.Errorf("%s runs as %v, want nginx (nginx owns /var/lib/nix-cache)", unit, u)
		}
	}
	if !empty(r.Config, "users") {
		t.Errorf("no kiss user needed here, got %v", get(t, r.Config, "users"))
	}
	if got := strs(t, get(t, r.Config, "firewall")); strings.Join(got, " ") != "443" {
		t.Errorf("firewall %q", got)
	}
	if got := get(t, r.Config, "systemd", "sockets", "kiss-serve-ci", "socketConfig", "SocketUser"); got != "nginx" {
		t.Errorf("kiss-serve-ci.socket owner %v", got)
	}
	if got := strs(t, get(t, r.Config, "systemd", "services", "tor", "serviceConfig", "BindPaths")); strings.Join(got, " ") != "/run/kiss-tor" {
		t.Errorf("tor BindPaths %q", got)
	}
}

// applyTmpfiles runs the real `systemd-tmpfiles --create` on a host's
// tmpfiles rules (whose paths a test has moved to temporary directories),
// with every owner and group made root (the hosts' users do not exist here).
func applyTmpfiles(t *testing.T, rules []string) {
	t.Helper()
	var conf strings.Builder
	for _, r := range rules {
		f := strings.SplitN(r, " ", 6)
		if len(f) < 5 || !strings.HasPrefix(f[1], "/tmp/") {
			t.Fatalf("tmpfiles rule %q: not a rule on a temporary path", r)
		}
		f[3], f[4] = "root", "root"
		conf.WriteString(strings.Join(f, " ") + "\n")
	}
	file := filepath.Join(t.TempDir(), "kiss.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-tmpfiles", "--create", file).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-tmpfiles --create: %v\n%s\n%s", err, out, conf.String())
	}
}
