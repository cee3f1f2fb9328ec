package nixos_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestPathLiteralsStayPaths: NixOS's types.path takes a path literal
// (cacheDir = /var/lib/nix-cache;) as well as a string, and the original
// kiss-cache typed cacheDir and gcRoots as paths, so its users may write
// either. A path literal interpolated into a string ("file://${dir}") is
// copied into the Nix store: the units would then prune, serve and make
// writable a read-only copy of the cache taken at evaluation time, not the
// cache. Every directory option must mean the directory itself.
func TestPathLiteralsStayPaths(t *testing.T) {
	nix := testenv.Nix(t)
	base := filepath.Join(t.TempDir(), "kiss-literal")
	cache := filepath.Join(base, "cache")
	roots := filepath.Join(base, "roots")
	metrics := filepath.Join(base, "textfile")
	for _, d := range []string{cache, roots, metrics} {
		if err := os.MkdirAll(d, 0o755); err != nil { // a path literal must exist to be copied
			t.Fatal(err)
		}
	}
	// Nix path literals: no quotes.
	r := mustEvalConfig(t, nix, `{
		services.kiss.prune = { enable = true; cacheDir = `+cache+`; metricsFile = `+metrics+`/kiss.prom; roots = [ "ci/" ]; };
		services.kiss.serve = { enable = true; cacheDir = `+cache+`; listen = [ "127.0.0.1:8080" ]; tor = { enable = true; cacheDir = `+cache+`; }; };
		services.kiss.publish = { enable = true; cacheDir = `+cache+`; systems = [ { flakeRef = "path:/x#y"; marker = "m"; } ]; };
	}`)
	old := mustEvalConfig(t, nix, `{ services.kiss-cache = {
		enable = true; cacheDir = `+cache+`; gcRoots = [ `+roots+` `+cache+`/gcroots ];
		serve = { enable = true; cacheDir = `+cache+`; hostName = "cache"; sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem"; writers = [ "CN=w" ]; };
	}; }`)
	copied := regexp.MustCompile(`/nix/store/[0-9a-z]{32}-(cache|roots|textfile)\b`)
	for name, res := range map[string]*evalResult{"kiss options": r, "kiss-cache options": old} {
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if m := copied.FindAllString(string(b), -1); m != nil {
			t.Errorf("%s: a path literal was copied into the store: %q", name, m)
		}
	}
	prune := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig")
	if got := get(t, prune, "ExecStart").(string); !strings.HasSuffix(got, " file://"+cache) || !strings.Contains(got, "--metrics-file "+metrics+"/kiss.prom") {
		t.Errorf("kiss-prune ExecStart %q", got)
	}
	if got := strings.Join(strs(t, get(t, prune, "ReadWritePaths")), " "); got != cache+" "+metrics {
		t.Errorf("kiss-prune ReadWritePaths %q", got)
	}
	if got := get(t, r.Config, "systemd", "services", "kiss-serve", "serviceConfig", "ExecStart").(string); !strings.Contains(got, "--store file://"+cache+" ") {
		t.Errorf("kiss-serve ExecStart %q", got)
	}
	if got := get(t, old.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string); !strings.HasSuffix(got, " prune --roots "+roots+" --lock-wait 10m file://"+cache) {
		t.Errorf("kiss-cache pruner ExecStart %q", got)
	}
	if got := strings.Join(strs(t, get(t, old.Config, "systemd", "services", "nginx", "serviceConfig", "ReadWritePaths")), " "); got != cache {
		t.Errorf("nginx ReadWritePaths %q", got)
	}
}
