package nixos_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

func example(name string) string {
	return "import " + filepath.Join(testenv.ModuleRoot(), "nixos", "tests", "kiss-cache-examples", name+".nix")
}

// TestKissCacheExamples evaluates the original kiss-cache's documented
// example configurations (nixos/tests/kiss-cache-examples, as written in
// its docs) against kiss's modules, unchanged: they evaluate without a
// failed assertion, each old option's use is warned about, and the
// resulting kiss configuration is what the old one meant — down to the
// rendered nginx config, unit names (aliases of the old ones) and CLIs.
func TestKissCacheExamples(t *testing.T) {
	nix := testenv.Nix(t)
	eval := func(t *testing.T, name string) *evalResult {
		t.Helper()
		r := mustEvalConfig(t, nix, example(name))
		for _, w := range r.Warnings {
			if !strings.Contains(w, "services.kiss") {
				t.Errorf("warning names no new option: %q", w)
			}
		}
		if len(r.Warnings) == 0 {
			t.Error("old option names used without a warning")
		}
		return r
	}
	kiss := func(r *evalResult, path ...string) any {
		return get(t, r.Config, append([]string{"kiss"}, path...)...)
	}
	nginxServe := func(t *testing.T, r *evalResult, host string) {
		t.Helper()
		if kiss(r, "serve", "backend") != "nginx" || kiss(r, "serve", "hostName") != host || kiss(r, "serve", "cacheDir") != "/var/lib/nix-cache" {
			t.Errorf("serve: %v", kiss(r, "serve"))
		}
		conf := get(t, r.Config, "nginx", "appendHttpConfig").(string)
		if !strings.Contains(conf, "server_name "+host+";") || !strings.Contains(conf, `CN\\=builder-01(?:[,+]`) || !strings.Contains(conf, "ssl_verify_client on;") {
			t.Errorf("nginx config:\n%s", conf)
		}
		if got := strs(t, get(t, r.Config, "systemd", "services", "kiss-prune", "aliases")); !reflect.DeepEqual(got, []string{"kiss-cache.service"}) {
			t.Errorf("kiss-prune aliases %q", got)
		}
	}

	t.Run("README", func(t *testing.T) {
		r := eval(t, "readme")
		nginxServe(t, r, "cache.example.org")
		if kiss(r, "prune", "schedule") != "daily" || kiss(r, "prune", "rootMaxAge") != "30d" || kiss(r, "serve", "fallbackCache") != "https://cache.nixos.org" {
			t.Errorf("prune %v", kiss(r, "prune"))
		}
		if got := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart"); !strings.HasSuffix(got.(string), " prune --lock-wait 10m --root-max-age 30d file:///var/lib/nix-cache") {
			t.Errorf("ExecStart %q", got)
		}
	})
	for _, name := range []string{"quickstart", "mtls"} {
		t.Run(name, func(t *testing.T) {
			r := eval(t, name)
			nginxServe(t, r, "cache.example.org")
			if got := strs(t, kiss(r, "serve", "writers")); !reflect.DeepEqual(got, []string{"CN=builder-01"}) && !reflect.DeepEqual(got, []string{"CN=builder-01", "CN=builder-01"}) {
				t.Errorf("writers %q", got)
			}
		})
	}
	t.Run("publish", func(t *testing.T) {
		r := eval(t, "deployment-publish")
		if kiss(r, "publish", "store") != "https://cache.example.org" || kiss(r, "publish", "schedule") != "*-*-* 02:00:00" ||
			kiss(r, "publish", "tlsPrivateKey") != "/etc/ssl/writer.key" || len(kiss(r, "publish", "systems").([]any)) != 2 {
			t.Errorf("publish %v", kiss(r, "publish"))
		}
		if got := strs(t, get(t, r.Config, "systemd", "services", "kiss-publish", "aliases")); !reflect.DeepEqual(got, []string{"kiss-cache-publish.service"}) {
			t.Errorf("aliases %q", got)
		}
		if got := strs(t, get(t, r.Config, "systemPackages")); !reflect.DeepEqual(got, []string{"kiss-cache-publish", "kiss-publish"}) && !reflect.DeepEqual(got, []string{"kiss-publish", "kiss-cache-publish"}) {
			t.Errorf("CLIs %q, want kiss-publish and the original's kiss-cache-publish", got)
		}
		if s := r.Scripts["kiss-cache-publish"]; !strings.Contains(s, "kiss-publish/bin/kiss-publish") {
			t.Errorf("kiss-cache-publish does not run kiss-publish: %q", s)
		}
	})
	t.Run("publish locally", func(t *testing.T) {
		r := eval(t, "deployment-publish-local")
		if kiss(r, "publish", "cacheDir") != "/var/lib/nix-cache" || kiss(r, "publish", "store") != nil {
			t.Errorf("publish %v", kiss(r, "publish"))
		}
	})
	t.Run("update", func(t *testing.T) {
		r := eval(t, "deployment-update")
		if kiss(r, "update", "cacheUrl") != "https://cache.example.org" || kiss(r, "update", "marker") != "web1" || kiss(r, "update", "interval") != "5m" {
			t.Errorf("update %v", kiss(r, "update"))
		}
		if got := strs(t, get(t, r.Config, "systemd", "timers", "kiss-update", "aliases")); !reflect.DeepEqual(got, []string{"kiss-cache-update.timer"}) {
			t.Errorf("aliases %q", got)
		}
	})
	t.Run("OIDC", func(t *testing.T) {
		r := eval(t, "oidc")
		vh := get(t, r.Config, "kiss", "serve", "virtualHosts", "oidc")
		if get(t, vh, "backend") != "nginx" || get(t, vh, "hostName") != "cache.example.org" || get(t, vh, "oidc", "audience") != "https://cache.example.org" {
			t.Errorf("oidc vhost %v", vh)
		}
		if len(r.Warnings) != 1 {
			t.Errorf("warnings %q (resolvers were not set: no warning about them)", r.Warnings)
		}
		exec := get(t, r.Config, "systemd", "services", "kiss-serve-oidc", "serviceConfig", "ExecStart").(string)
		if !strings.Contains(exec, `--oidc-read-subject "repo:example/*"`) || !strings.Contains(exec, "--oidc-write-subject repo:example/infra:ref:refs/heads/main") {
			t.Errorf("ExecStart %s", exec)
		}
	})
	t.Run("Tor", func(t *testing.T) {
		r := eval(t, "tor-serve")
		if len(strs(t, kiss(r, "serve", "tor", "readClients"))) != 2 || len(strs(t, kiss(r, "serve", "tor", "writeClients"))) != 1 {
			t.Errorf("tor %v", kiss(r, "serve", "tor"))
		}
		if torrc := get(t, r.Config, "tor", "torrc").(string); !strings.Contains(torrc, "HiddenServicePort 80 unix:/run/kiss-tor/write.sock") {
			t.Errorf("torrc:\n%s", torrc)
		}
		r = eval(t, "tor-update")
		if kiss(r, "update", "cacheUrl") != "http://2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion" {
			t.Errorf("update over Tor: %v", kiss(r, "update"))
		}
		r = eval(t, "tor-publish")
		if kiss(r, "publish", "store") != "http://3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.onion" {
			t.Errorf("publish over Tor: %v", kiss(r, "publish"))
		}
	})
	t.Run("the original's VM test", func(t *testing.T) {
		r := eval(t, "vm-test")
		// lockWait seconds become a duration; gcRoots other than the cache's
		// own gcroots/ become --roots; tmpfiles' gcRootMaxAge is the pruner's.
		exec := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string)
		if !strings.HasSuffix(exec, " prune --roots /var/lib/nix-cache-roots --lock-wait 600s --root-max-age 7d file:///var/lib/nix-cache") {
			t.Errorf("ExecStart %s", exec)
		}
		changed := strings.Join(r.Warnings, "\n")
		for _, w := range []string{"services.kiss-cache.lockWait' defined in `configuration.nix' has been changed to `services.kiss.prune.lockWait'",
			"services.kiss-cache.gcRoots' defined in `configuration.nix' has been changed to `services.kiss.prune.roots'"} {
			if !strings.Contains(changed, w) {
				t.Errorf("no warning %q in\n%s", w, changed)
			}
		}
	})
}

// TestKissCacheGcRootMaxAgeNull: the original's gcRootMaxAge is nullOr str
// with default null ("keep forever"); written out explicitly, as a host
// that sets it from a variable does, it must mean no marker expiry.
func TestKissCacheGcRootMaxAgeNull(t *testing.T) {
	nix := testenv.Nix(t)
	for _, prefix := range []string{"services.kiss-cache.serve", "services.kiss-cache-serve"} {
		r := mustEvalConfig(t, nix, `{ services.kiss-cache = { enable = true; cacheDir = "/var/lib/nix-cache"; gcRoots = [ "/var/lib/nix-cache/gcroots" ]; };
			`+prefix+` = { enable = true; cacheDir = "/var/lib/nix-cache"; hostName = "cache"; sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem"; writers = [ "CN=w" ]; gcRootMaxAge = null; }; }`)
		if got := get(t, r.Config, "kiss", "prune", "rootMaxAge"); got != nil {
			t.Errorf("%s.gcRootMaxAge = null: rootMaxAge %v, want null", prefix, got)
		}
		if exec := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string); strings.Contains(exec, "--root-max-age") {
			t.Errorf("%s.gcRootMaxAge = null: ExecStart %s", prefix, exec)
		}
	}
}

// TestKissCacheRefusals: original options kiss cannot take are refused
// with a message that says what to do instead.
func TestKissCacheRefusals(t *testing.T) {
	nix := testenv.Nix(t)
	r, err := evalConfig(t, nix, `{ services.kiss-cache = { enable = true; cacheDir = "/c"; package = { type = "derivation"; name = "kiss-cache"; outPath = "/nix/store/00000000000000000000000000000000-kiss-cache"; }; }; }`)
	if err != nil {
		t.Fatal(err)
	}
	if msg := strings.Join(r.FailedAssertions, "\n"); !strings.Contains(msg, "services.kiss-cache.package") || !strings.Contains(msg, "leave services.kiss.package unset") {
		t.Errorf("package: %q", r.FailedAssertions)
	}
	_, err = evalConfig(t, nix, `{ services.kiss-cache = { enable = true; cacheDir = "/c"; serve.gcRootMaxAge = "1y"; }; }`)
	if err == nil || !strings.Contains(err.Error(), `gcRootMaxAge = "1y": kiss expires markers itself (services.kiss.prune.rootMaxAge`) {
		t.Errorf("gcRootMaxAge 1y: %v", err)
	}
	// A lockWait that is not seconds is a type error under its old name too.
	_, err = evalConfig(t, nix, `{ services.kiss-cache = { enable = true; cacheDir = "/c"; lockWait = "ten minutes"; }; }`)
	if err == nil || !strings.Contains(err.Error(), "services.kiss.prune.lockWait") {
		t.Errorf("lockWait: %v", err)
	}
}
