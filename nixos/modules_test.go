package nixos_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// evalResult is what nixos/tests/eval.nix returns.
type evalResult struct {
	Config           map[string]any    `json:"config"`
	FailedAssertions []string          `json:"failedAssertions"`
	Warnings         []string          `json:"warnings"`
	Scripts          map[string]string `json:"scripts"`
}

// evalConfig evaluates kiss's NixOS modules (nixos/default.nix, or the
// given module files) with the real module system (nixpkgs' lib, see
// testenv.NixpkgsLib) for a host configuration (a Nix expression, as in
// configuration.nix). An error carries the module system's message.
func evalConfig(t *testing.T, nix *testenv.NixEnv, configuration string, modules ...string) (*evalResult, error) {
	t.Helper()
	lib := testenv.NixpkgsLib(t)
	args := []string{"--eval", "--strict", "--json",
		filepath.Join(testenv.ModuleRoot(), "nixos", "tests", "eval.nix"),
		"--arg", "lib", "import " + lib, "--arg", "configuration", configuration}
	if len(modules) > 0 {
		var ms []string
		for _, m := range modules {
			ms = append(ms, filepath.Join(testenv.ModuleRoot(), "nixos", m))
		}
		args = append(args, "--arg", "modules", "[ "+strings.Join(ms, " ")+" ]")
	}
	out, err := nix.Run("nix-instantiate", args...)
	if err != nil {
		return nil, err
	}
	var r evalResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("eval.nix output: %v\n%s", err, out)
	}
	return &r, nil
}

// evalModules evaluates the modules for a host whose services.kiss is
// settings (a Nix attribute set).
func evalModules(t *testing.T, nix *testenv.NixEnv, settings string) (*evalResult, error) {
	t.Helper()
	return evalConfig(t, nix, "{ services.kiss = "+settings+"; }")
}

func mustEval(t *testing.T, nix *testenv.NixEnv, settings string) *evalResult {
	t.Helper()
	return mustEvalConfig(t, nix, "{ services.kiss = "+settings+"; }")
}

func mustEvalConfig(t *testing.T, nix *testenv.NixEnv, configuration string, modules ...string) *evalResult {
	t.Helper()
	r, err := evalConfig(t, nix, configuration, modules...)
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if len(r.FailedAssertions) > 0 {
		t.Fatalf("failed assertions: %q", r.FailedAssertions)
	}
	return r
}

// get walks a JSON tree by keys ("systemd", "services", "kiss-prune", …).
func get(t *testing.T, v any, path ...string) any {
	t.Helper()
	for i, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is %T, not an attrset", strings.Join(path[:i], "."), v)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("%s missing (have %v)", strings.Join(path[:i+1], "."), keys(m))
		}
	}
	return v
}

func has(v any, path ...string) bool {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// empty reports whether path is missing or an empty attrset or list (the
// stub resolves a false mkIf to an empty attrset, NixOS drops it).
func empty(v any, path ...string) bool {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return true
		}
	}
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func strs(t *testing.T, v any) []string {
	t.Helper()
	l, ok := v.([]any)
	if !ok {
		t.Fatalf("%v is %T, not a list", v, v)
	}
	var out []string
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

const kissExe = "/nix/store/00000000000000000000000000000000-kiss/bin/kiss"

// TestNixFilesParse parses every .nix file this area owns.
func TestNixFilesParse(t *testing.T) {
	nix := testenv.Nix(t)
	root := testenv.ModuleRoot()
	files := []string{filepath.Join(root, "flake.nix"), filepath.Join(root, "package.nix")}
	more, _ := filepath.Glob(filepath.Join(root, "nixos", "*.nix"))
	tests, _ := filepath.Glob(filepath.Join(root, "nixos", "tests", "*.nix"))
	files = append(append(files, more...), tests...)
	if len(files) < 10 {
		t.Fatalf("only %d .nix files found: %v", len(files), files)
	}
	for _, f := range files {
		if _, err := nix.Run("nix-instantiate", "--parse", f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestModulesDisabledGenerateNothing(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ }`)
	for _, path := range [][]string{
		{"systemd", "services"}, {"systemd", "sockets"}, {"systemd", "timers"}, {"systemd", "tmpfiles"},
		{"unitFiles"}, {"users"}, {"groups"}, {"firewall"}, {"systemPackages"},
	} {
		if !empty(r.Config, path...) {
			t.Errorf("all modules disabled, yet %s = %v", strings.Join(path, "."), get(t, r.Config, path...))
		}
	}
	if get(t, r.Config, "nginx", "enable") != false || get(t, r.Config, "tor", "enable") != false {
		t.Error("nginx or tor enabled with every module disabled")
	}
	want := map[string][]string{
		"prune":   {"cacheDir", "dryRun", "enable", "environmentFile", "extraArgs", "grace", "lockWait", "metricsFile", "persistent", "randomizedDelaySec", "rootMaxAge", "roots", "schedule", "store", "user"},
		"update":  {"cacheUrl", "enable", "interval", "kexec", "marker", "onBootChange", "priority", "tlsCACertificate", "tlsCertificate", "tlsPrivateKey", "tor"},
		"serve":   {"backend", "cacheDir", "clientCA", "enable", "environmentFile", "extraArgs", "fallbackCache", "gcrootsProxy", "hostName", "leaseGateway", "listen", "nginxExtraConfig", "oidc", "openFirewall", "priority", "redirectReads", "resolvers", "socketActivation", "sslCertificate", "sslCertificateKey", "store", "tor", "virtualHosts", "writers"},
		"publish": {"bearerTokenFile", "cacheDir", "compression", "enable", "environmentFile", "package", "schedule", "secretKeyFile", "store", "systems", "tlsCACertificate", "tlsCertificate", "tlsPrivateKey", "tor"},
	}
	for mod, w := range want {
		if got := keys(get(t, r.Config, "kiss", mod).(map[string]any)); !reflect.DeepEqual(got, w) {
			t.Errorf("services.kiss.%s options:\n got %q\nwant %q", mod, got, w)
		}
	}
}

func TestPruneModuleFile(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ prune = {
		enable = true; cacheDir = "/var/lib/nix-cache"; schedule = "daily";
		grace = "2h"; rootMaxAge = "30d"; roots = [ "ci/" ];
		metricsFile = "/var/lib/prometheus-node-exporter-text/kiss_prune.prom";
	}; }`)
	svc := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig")
	wantExec := kissExe + " prune --roots ci/ --lock-wait 10m --grace 2h --root-max-age 30d --metrics-file /var/lib/prometheus-node-exporter-text/kiss_prune.prom file:///var/lib/nix-cache"
	if got := get(t, svc, "ExecStart"); got != wantExec {
		t.Errorf("ExecStart\n got %q\nwant %q", got, wantExec)
	}
	for k, want := range map[string]any{
		"Type": "oneshot", "ProtectSystem": "strict", "NoNewPrivileges": true, "PrivateTmp": true,
		"ProtectHome": true, "User": "root", "TimeoutStartSec": "infinity",
	} {
		if got := get(t, svc, k); got != want {
			t.Errorf("serviceConfig.%s = %v, want %v", k, got, want)
		}
	}
	if got := strs(t, get(t, svc, "ReadWritePaths")); !reflect.DeepEqual(got, []string{"/var/lib/nix-cache", "/var/lib/prometheus-node-exporter-text"}) {
		t.Errorf("ReadWritePaths %q", got)
	}
	if has(svc, "EnvironmentFile") {
		t.Error("EnvironmentFile set without environmentFile")
	}
	timer := get(t, r.Config, "systemd", "timers", "kiss-prune", "timerConfig")
	if !reflect.DeepEqual(timer, map[string]any{"OnCalendar": "daily", "Persistent": true, "RandomizedDelaySec": "1h"}) {
		t.Errorf("timerConfig %v", timer)
	}
	if got := strs(t, get(t, r.Config, "systemd", "timers", "kiss-prune", "wantedBy")); !reflect.DeepEqual(got, []string{"timers.target"}) {
		t.Errorf("timer wantedBy %q", got)
	}
	if !empty(r.Config, "users") {
		t.Errorf("a root pruner created users %v", get(t, r.Config, "users"))
	}
	if got := strs(t, get(t, r.Config, "systemd", "services", "kiss-prune", "aliases")); !reflect.DeepEqual(got, []string{"kiss-cache.service"}) {
		t.Errorf("kiss-prune aliases %q, want the original's unit name", got)
	}
	if got := strs(t, get(t, r.Config, "systemd", "timers", "kiss-prune", "aliases")); !reflect.DeepEqual(got, []string{"kiss-cache.timer"}) {
		t.Errorf("kiss-prune.timer aliases %q", got)
	}
	// The unit file as NixOS writes it (tests/render.nix).
	unit := get(t, r.Config, "unitFiles", "kiss-prune.service", "text").(string)
	for _, line := range []string{"[Unit]", "After=network-online.target nix-gc.service", "[Service]", "X-RestartIfChanged=false",
		"ExecStart=" + wantExec, "ProtectSystem=strict", "ReadWritePaths=/var/lib/nix-cache",
		"ReadWritePaths=/var/lib/prometheus-node-exporter-text", "RestrictAddressFamilies=AF_INET6", "Type=oneshot"} {
		if !strings.Contains("\n"+unit, "\n"+line+"\n") {
			t.Errorf("kiss-prune.service lacks the line %q:\n%s", line, unit)
		}
	}
}

func TestPruneModuleS3DryRun(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ prune = {
		enable = true; store = "s3://nix-cache?region=eu-central-1"; dryRun = true;
		lockWait = "0s"; environmentFile = "/run/secrets/kiss.env"; extraArgs = [ "--json" ];
	}; }`)
	svc := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig")
	// The URL has a '?', so it is quoted for systemd's parser.
	wantExec := kissExe + ` prune --dry-run --lock-wait 0s --json "s3://nix-cache?region=eu-central-1"`
	if got := get(t, svc, "ExecStart"); got != wantExec {
		t.Errorf("ExecStart\n got %q\nwant %q", got, wantExec)
	}
	if got := get(t, svc, "EnvironmentFile"); got != "/run/secrets/kiss.env" {
		t.Errorf("EnvironmentFile %v", got)
	}
	if got := strs(t, get(t, svc, "ReadWritePaths")); len(got) != 0 {
		t.Errorf("S3 pruner gets ReadWritePaths %q", got)
	}
}

func TestModuleAssertions(t *testing.T) {
	nix := testenv.Nix(t)
	const tls = `sslCertificate = "/a"; sslCertificateKey = "/b";`
	for name, c := range map[string]struct{ settings, want string }{
		"prune without store": {`{ prune.enable = true; }`, "set exactly one of store and cacheDir"},
		"prune with both":     {`{ prune = { enable = true; store = "s3://b"; cacheDir = "/c"; }; }`, "set exactly one of store and cacheDir"},
		"mtls and oidc": {`{ serve = { enable = true; backend = "nginx"; cacheDir = "/c"; hostName = "h"; ` + tls + ` clientCA = "/ca";
			oidc = { audience = "x"; readSubjects = [ "r" ]; writeSubjects = [ "w" ]; }; }; }`, "choose clientCA (mTLS) or oidc, not both"},
		"nginx mtls on s3": {`{ serve = { enable = true; backend = "nginx"; store = "s3://b"; hostName = "h"; ` + tls + ` clientCA = "/ca"; }; }`,
			"the nginx backend with mTLS serves a directory"},
		"nginx without auth": {`{ serve = { enable = true; backend = "nginx"; cacheDir = "/c"; hostName = "h"; ` + tls + ` }; }`,
			"the nginx backend needs clientCA (mTLS) or oidc"},
		"nginx without hostName": {`{ serve = { enable = true; backend = "nginx"; cacheDir = "/c"; ` + tls + ` clientCA = "/ca"; }; }`,
			"the nginx backend needs hostName"},
		"writers without CA":   {`{ serve = { enable = true; store = "s3://b"; ` + tls + ` writers = [ "CN=w" ]; }; }`, "writers are certificate DNs"},
		"plain http in public": {`{ serve = { enable = true; cacheDir = "/c"; }; }`, "without sslCertificate kiss serve only listens on loopback"},
		"redirects on file":    {`{ serve = { enable = true; cacheDir = "/c"; listen = [ "127.0.0.1:8080" ]; redirectReads = "all"; }; }`, "redirectReads needs backend"},
		"redirects with upstream": {`{ serve = { enable = true; store = "s3://b"; ` + tls + ` redirectReads = "all";
			fallbackCache = "https://cache.nixos.org"; }; }`, "redirectReads and fallbackCache exclude each other"},
		"two kiss vhosts on one port": {`{ serve = { enable = true; cacheDir = "/c"; ` + tls + `
			virtualHosts.ci = { cacheDir = "/c"; ` + tls + ` listen = [ "0.0.0.0:443" ]; }; }; }`, "both listen on port 443"},
		"kiss and nginx on one port": {`{ serve = { enable = true; backend = "nginx"; cacheDir = "/c"; hostName = "h"; ` + tls + ` clientCA = "/ca";
			virtualHosts.ci = { cacheDir = "/c"; ` + tls + ` }; }; }`, "only nginx virtual hosts can share a port"},
		"two nginx vhosts, one name": {`{ serve = { enable = true; backend = "nginx"; cacheDir = "/c"; hostName = "h"; ` + tls + ` clientCA = "/ca";
			virtualHosts.ci = { backend = "nginx"; cacheDir = "/c"; hostName = "h"; ` + tls + ` clientCA = "/ca"; }; }; }`, "have the same hostName"},
		"bad vhost name": {`{ serve.virtualHosts."CI_1" = { cacheDir = "/c"; listen = [ "127.0.0.1:8080" ]; }; }`, "a virtual host's name must match"},
		"tor key format": {`{ serve = { enable = true; cacheDir = "/c"; listen = [ "127.0.0.1:8080" ];
			tor = { enable = true; writeClients = [ "x25519:AAAA" ]; }; }; }`, "is not descriptor:x25519:<52 base32 characters>"},
		"tor without a store": {`{ serve.tor.enable = true; serve.tor.cacheDir = "/c"; serve.tor.store = "s3://b"; }`, "set at most one of store and cacheDir"},
		"publish no systems":  {`{ publish = { enable = true; store = "https://c"; }; }`, "systems is empty"},
		"publish tls in local mode": {`{ publish = { enable = true; cacheDir = "/c"; tlsCACertificate = "/ca";
			systems = [ { flakeRef = "path:/x#y"; marker = "m"; } ]; }; }`, "make no sense in local mode"},
		"publish one marker twice": {`{ publish = { enable = true; cacheDir = "/c";
			systems = [ { flakeRef = "path:/x#y"; marker = "m"; } { flakeRef = "path:/x#z"; marker = "m"; } ]; }; }`, "two systems publish to the same marker"},
		"update onion": {`{ update = { enable = true; tor = { enable = true; onion = "cache.example.org"; }; }; }`, "is not a v3 onion address"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := evalModules(t, nix, c.settings)
			if err != nil {
				t.Fatalf("eval failed instead of reporting an assertion: %v", err)
			}
			if !strings.Contains(strings.Join(r.FailedAssertions, "\n"), c.want) {
				t.Fatalf("failed assertions %q, want one containing %q", r.FailedAssertions, c.want)
			}
		})
	}
}

// TestModuleTypeErrors: what kiss would refuse at run time (or NixOS at
// build time) is refused at evaluation time by the option types, with the
// module system's message naming the option, the expected type and the
// definition.
func TestModuleTypeErrors(t *testing.T) {
	nix := testenv.Nix(t)
	for name, c := range map[string]struct{ settings, want string }{
		// kiss prune --lock-wait 600 is a parse error: a duration needs a unit.
		"lockWait in seconds": {`{ prune = { enable = true; cacheDir = "/c"; lockWait = 600; }; }`,
			"services.kiss.prune.lockWait' is not of type `duration"},
		"lockWait without unit": {`{ prune = { enable = true; cacheDir = "/c"; lockWait = "600"; }; }`,
			"services.kiss.prune.lockWait' is not of type `duration"},
		"grace in words": {`{ prune = { enable = true; cacheDir = "/c"; grace = "2 days"; }; }`,
			"services.kiss.prune.grace' is not of type `null or duration"},
		"rootMaxAge zero": {`{ prune = { enable = true; cacheDir = "/c"; rootMaxAge = "0d"; }; }`,
			"services.kiss.prune.rootMaxAge' is not of type `null or positive duration"},
		"negative priority": {`{ serve = { enable = true; cacheDir = "/c"; listen = [ "127.0.0.1:8080" ]; priority = -1; }; }`,
			"services.kiss.serve.priority' is not of type `unsigned integer"},
		"relative cacheDir": {`{ serve = { enable = true; cacheDir = "var/rel"; listen = [ "127.0.0.1:8080" ]; }; }`,
			"services.kiss.serve.cacheDir' is not of type `null or absolute path'"},
		"relative prune cacheDir": {`{ prune = { enable = true; cacheDir = "var/rel"; }; }`,
			"services.kiss.prune.cacheDir' is not of type `null or absolute path'"},
		"store without scheme": {`{ prune = { enable = true; store = "/var/lib/nix-cache"; }; }`,
			"services.kiss.prune.store' is not of type `null or store URL"},
		// A path literal would copy the key into the world-readable store.
		"key as a path literal": {`{ serve = { enable = true; cacheDir = "/c"; sslCertificate = "/c.pem"; sslCertificateKey = /etc/hostname; }; }`,
			"services.kiss.serve.sslCertificateKey' is not of type `null or absolute path outside the Nix store"},
		"signing key in the store": {`{ publish = { enable = true; cacheDir = "/c"; secretKeyFile = "/nix/store/00000000000000000000000000000000-key";
			systems = [ { flakeRef = "path:/x#y"; marker = "m"; } ]; }; }`,
			"services.kiss.publish.secretKeyFile' is not of type `null or absolute path outside the Nix store"},
		"update from a file": {`{ update = { enable = true; cacheUrl = "file:///c"; }; }`,
			"services.kiss.update.cacheUrl' is not of type `string matching the pattern https?://"},
		"backend caddy": {`{ serve = { enable = true; backend = "caddy"; cacheDir = "/c"; }; }`,
			"services.kiss.serve.backend' is not of type `one of \"kiss\", \"nginx\"'"},
		"vhost priority": {`{ serve.virtualHosts.ci = { cacheDir = "/c"; listen = [ "127.0.0.1:8080" ]; priority = "high"; }; }`,
			"services.kiss.serve.virtualHosts.ci.priority' is not of type `unsigned integer"},
		"misspelt option": {`{ prune = { enable = true; cacheDir = "/c"; rootMaxAgee = "1d"; }; }`,
			"The option `services.kiss.prune.rootMaxAgee' does not exist"},
		"socks port": {`{ update = { enable = true; tor = { enable = true; socksPort = 70000;
			onion = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"; }; }; }`,
			"services.kiss.update.tor.socksPort' is not of type `16 bit unsigned integer"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := evalModules(t, nix, c.settings)
			if err == nil {
				t.Fatalf("evaluated (assertions %q), want a type error containing %q", r.FailedAssertions, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not contain %q:\n%v", c.want, err)
			}
		})
	}
	// A unit option NixOS's systemd module checks.
	_, err := evalConfig(t, nix, `{ services.kiss.prune = { enable = true; cacheDir = "/c"; };
		systemd.services.kiss-prune.serviceConfig.Restart = "sometimes"; }`)
	if err == nil || !strings.Contains(err.Error(), "systemd.services.kiss-prune.serviceConfig") {
		t.Errorf("Restart = \"sometimes\" accepted: %v", err)
	}
}

// TestModuleOverridesWin: the hardening is mkDefault, so a host's plain
// setting wins over it without mkForce; lists the module sets at normal
// priority (ReadWritePaths) are extended, as NixOS's unit options merge.
// A conflicting plain definition of what the module sets at normal
// priority is an error, as in NixOS.
func TestModuleOverridesWin(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEvalConfig(t, nix, `{
		services.kiss.prune = { enable = true; cacheDir = "/var/lib/nix-cache"; };
		systemd.services.kiss-prune.serviceConfig = {
			ProtectSystem = "full";
			RestrictAddressFamilies = [ "AF_UNIX" ];
			ReadWritePaths = [ "/srv/extra" ];
			MemoryMax = "2G";
		};
		services.kiss.serve = { enable = true; cacheDir = "/var/lib/nix-cache"; listen = [ "127.0.0.1:8080" ]; };
		systemd.services.kiss-serve.serviceConfig.PrivateDevices = false;
	}`)
	sc := get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig")
	if got := get(t, sc, "ProtectSystem"); got != "full" {
		t.Errorf("ProtectSystem = %v, want the host's \"full\"", got)
	}
	if got := strs(t, get(t, sc, "RestrictAddressFamilies")); !reflect.DeepEqual(got, []string{"AF_UNIX"}) {
		t.Errorf("RestrictAddressFamilies %q, want the host's list alone", got)
	}
	if got := strs(t, get(t, sc, "ReadWritePaths")); !reflect.DeepEqual(got, []string{"/var/lib/nix-cache", "/srv/extra"}) && !reflect.DeepEqual(got, []string{"/srv/extra", "/var/lib/nix-cache"}) {
		t.Errorf("ReadWritePaths %q, want the module's and the host's", got)
	}
	if get(t, sc, "MemoryMax") != "2G" || get(t, r.Config, "systemd", "services", "kiss-serve", "serviceConfig", "PrivateDevices") != false {
		t.Error("host's own settings missing")
	}
	if unit := get(t, r.Config, "unitFiles", "kiss-prune.service", "text").(string); !strings.Contains(unit, "\nProtectSystem=full\n") || strings.Contains(unit, "ProtectSystem=strict") {
		t.Errorf("rendered unit:\n%s", unit)
	}
	_, err := evalConfig(t, nix, `{ services.kiss.prune = { enable = true; cacheDir = "/c"; };
		systemd.services.kiss-prune.serviceConfig.User = "someone"; }`)
	if err == nil || !strings.Contains(err.Error(), "The option `systemd.services.kiss-prune.serviceConfig.User' has conflicting definition values") {
		t.Errorf("a conflicting User was accepted: %v", err)
	}
	r = mustEvalConfig(t, nix, `{ services.kiss.prune = { enable = true; cacheDir = "/c"; user = "someone"; }; }`)
	if get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "User") != "someone" || !empty(r.Config, "users") {
		t.Error("prune.user is the way to change the user")
	}
}

func TestServeModuleKiss(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ serve = {
		enable = true; cacheDir = "/var/lib/nix-cache"; hostName = "cache.example.org";
		listen = [ "0.0.0.0:443" "[::]:443" ];
		sslCertificate = "/etc/cache/cert.pem"; sslCertificateKey = "/etc/cache/key.pem";
		clientCA = "/etc/cache/ca.pem"; writers = [ "CN=builder-01" "CN=hydra,O=Example" ];
		fallbackCache = "https://cache.nixos.org"; openFirewall = true;
	}; }`)
	svc := get(t, r.Config, "systemd", "services", "kiss-serve")
	sc := get(t, svc, "serviceConfig")
	wantExec := kissExe + " serve --store file:///var/lib/nix-cache --tls-cert %d/tls-cert --tls-key %d/tls-key --client-ca %d/client-ca" +
		" --writer CN=builder-01 --writer CN=hydra,O=Example --upstream https://cache.nixos.org --priority 30"
	if got := get(t, sc, "ExecStart"); got != wantExec {
		t.Errorf("ExecStart\n got %q\nwant %q", got, wantExec)
	}
	if got := strs(t, get(t, sc, "LoadCredential")); !reflect.DeepEqual(got, []string{
		"tls-cert:/etc/cache/cert.pem", "tls-key:/etc/cache/key.pem", "client-ca:/etc/cache/ca.pem"}) {
		t.Errorf("LoadCredential %q", got)
	}
	if get(t, sc, "User") != "kiss" || get(t, sc, "CapabilityBoundingSet") != "" || get(t, sc, "ProtectSystem") != "strict" {
		t.Errorf("user/capabilities/protection: %v %q %v", get(t, sc, "User"), get(t, sc, "CapabilityBoundingSet"), get(t, sc, "ProtectSystem"))
	}
	if got := strs(t, get(t, svc, "requires")); !reflect.DeepEqual(got, []string{"kiss-serve.socket"}) {
		t.Errorf("requires %q", got)
	}
	sock := get(t, r.Config, "systemd", "sockets", "kiss-serve")
	if got := strs(t, get(t, sock, "listenStreams")); !reflect.DeepEqual(got, []string{"0.0.0.0:443", "[::]:443"}) {
		t.Errorf("listenStreams %q", got)
	}
	if got := strs(t, get(t, r.Config, "firewall")); !reflect.DeepEqual(got, []string{"443"}) {
		t.Errorf("firewall %q", got)
	}
	if got := get(t, r.Config, "users", "kiss", "isSystemUser"); got != true {
		t.Errorf("kiss user not created: %v", got)
	}
	if get(t, r.Config, "nginx", "enable") != false {
		t.Error("kiss backend enabled nginx")
	}
}

func TestServeModuleKissOIDCOnS3(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ serve = {
		enable = true; store = "s3://nix-cache?region=eu-central-1"; hostName = "cache.example.org";
		socketActivation = false; listen = [ "[::]:8443" ];
		sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem";
		environmentFile = "/run/secrets/s3.env";
		oidc = { audience = "https://cache.example.org"; readSubjects = [ "repo:example/*" ];
		         writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ]; };
		redirectReads = "nar";
	}; }`)
	sc := get(t, r.Config, "systemd", "services", "kiss-serve", "serviceConfig")
	wantExec := kissExe + ` serve --store "s3://nix-cache?region=eu-central-1" --listen "[::]:8443" --tls-cert %d/tls-cert --tls-key %d/tls-key` +
		" --oidc-issuer https://token.actions.githubusercontent.com --oidc-audience https://cache.example.org" +
		" --oidc-jwks-url https://token.actions.githubusercontent.com/.well-known/jwks" +
		` --oidc-read-subject "repo:example/*" --oidc-write-subject repo:example/infra:ref:refs/heads/main --redirect-reads nar --priority 30`
	if got := get(t, sc, "ExecStart"); got != wantExec {
		t.Errorf("ExecStart\n got %q\nwant %q", got, wantExec)
	}
	if get(t, sc, "AmbientCapabilities") != "CAP_NET_BIND_SERVICE" || get(t, sc, "EnvironmentFile") != "/run/secrets/s3.env" {
		t.Errorf("capabilities/env: %v %v", get(t, sc, "AmbientCapabilities"), get(t, sc, "EnvironmentFile"))
	}
	if !empty(r.Config, "systemd", "sockets", "kiss-serve") || !empty(r.Config, "systemd", "tmpfiles") {
		t.Error("socket unit or tmpfiles without socket activation / directory")
	}
}

// TestServeModuleNginxUsesRenderer checks that the nginx backend hands nginx
// exactly what nginx-render.nix renders (the text the nginx tests run).
func TestServeModuleNginxUsesRenderer(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ serve = {
		enable = true; backend = "nginx"; cacheDir = "/var/lib/nix-cache"; hostName = "cache.example.org";
		sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem";
		writers = [ "CN=builder-01" ]; priority = 40; fallbackCache = "https://cache.nixos.org";
	}; }`)
	got := get(t, r.Config, "nginx", "appendHttpConfig")
	want, err := renderNginx(t, nix, `{ name = "kiss"; listen = [ "0.0.0.0:443" "[::]:443" ]; serverName = "cache.example.org";
		cacheDir = "/var/lib/nix-cache"; sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem";
		writers = [ "CN=builder-01" ]; priority = 40; fallbackCache = "https://cache.nixos.org"; resolvers = [ ];
		gcrootsProxy = "http://unix:/run/kiss/leases.sock:"; extraConfig = ""; }`)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("appendHttpConfig differs from the renderer:\n%s\n---\n%s", got, want)
	}
	if !strings.Contains(want, `CN\\=builder-01(?:[,+]`) || !strings.Contains(want, "Priority: 40") {
		t.Errorf("rendered config lacks the writer or priority:\n%s", want)
	}
	if got := strs(t, get(t, r.Config, "systemd", "services", "nginx", "serviceConfig", "ReadWritePaths")); !reflect.DeepEqual(got, []string{"/var/lib/nix-cache"}) {
		t.Errorf("nginx ReadWritePaths %q", got)
	}
	if got := strs(t, get(t, r.Config, "systemd", "tmpfiles")); !reflect.DeepEqual(got, []string{
		"d /var/lib/nix-cache 0755 nginx nginx -", "d /var/lib/nix-cache/gcroots 0755 nginx nginx -",
		"d /var/lib/nix-cache/gcroots/.lock 0755 nginx nginx -", "d /var/lib/nix-cache/.kiss 0755 nginx nginx -",
		"d /var/lib/nix-cache/.kiss/tmp 0755 nginx nginx -",
		`f /var/lib/nix-cache/nix-cache-info 0644 nginx nginx - StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n`,
		"d /var/lib/nix-cache/.tmp 0700 nginx nginx -"}) {
		t.Errorf("tmpfiles %q", got)
	}
	if has(r.Config, "systemd", "services", "kiss-serve") {
		t.Error("nginx backend also started kiss serve")
	}
	// The lease gateway nginx proxies gcroots/ to (on by default with writers).
	leases := get(t, r.Config, "systemd", "services", "kiss-leases", "serviceConfig")
	if got := get(t, leases, "ExecStart"); got != kissExe+" serve --store file:///var/lib/nix-cache --anonymous-writes" {
		t.Errorf("kiss-leases ExecStart %q", got)
	}
	if get(t, leases, "User") != "nginx" || !reflect.DeepEqual(strs(t, get(t, leases, "RestrictAddressFamilies")), []string{"AF_UNIX"}) {
		t.Errorf("kiss-leases user/address families: %v", leases)
	}
	sock := get(t, r.Config, "systemd", "sockets", "kiss-leases")
	if !reflect.DeepEqual(strs(t, get(t, sock, "listenStreams")), []string{"/run/kiss/leases.sock"}) ||
		get(t, sock, "socketConfig", "SocketMode") != "0600" || get(t, sock, "socketConfig", "SocketUser") != "nginx" {
		t.Errorf("kiss-leases socket %v", sock)
	}

	// Read-only (no writers): no lease gateway, and gcroots/.lock/ refused.
	r = mustEval(t, nix, `{ serve = {
		enable = true; backend = "nginx"; cacheDir = "/c"; hostName = "h";
		sslCertificate = "/c.pem"; sslCertificateKey = "/k.pem"; clientCA = "/ca.pem";
	}; }`)
	if !empty(r.Config, "systemd", "services", "kiss-leases") || !empty(r.Config, "systemd", "sockets", "kiss-leases") {
		t.Error("read-only nginx cache got a lease gateway")
	}
	if cfg := get(t, r.Config, "nginx", "appendHttpConfig").(string); strings.Contains(cfg, "proxy_pass") || strings.Contains(cfg, "dav_methods") {
		t.Errorf("read-only config proxies or accepts writes:\n%s", cfg)
	}
}

// fakeTools writes executable shell scripts named after the keys into a
// fresh directory and returns it. Each script logs "name args…" to $CALLS.
func fakeTools(t *testing.T, tools map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range tools {
		script := "#!/bin/sh\nprintf '%s' \"" + name + "\" >>\"$CALLS\"; for a in \"$@\"; do printf ' [%s]' \"$a\" >>\"$CALLS\"; done; echo >>\"$CALLS\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type scriptRun struct {
	code   int
	stdout string
	stderr string
	calls  string
}

func runScript(t *testing.T, script, toolDir string, env []string, args ...string) scriptRun {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "script")
	if err := os.WriteFile(file, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(dir, "calls")
	cmd := exec.Command("bash", append([]string{file}, args...)...)
	cmd.Env = append([]string{"PATH=" + toolDir + ":/usr/bin:/bin", "CALLS=" + calls, "HOME=" + dir}, env...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	c, _ := os.ReadFile(calls)
	return scriptRun{code, so.String(), se.String(), string(c)}
}

func bashSyntax(t *testing.T, name, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: bash -n: %v\n%s", name, err, out)
	}
}

// TestPublishScript runs the generated kiss-publish with fake nix and kiss:
// the fake `kiss with-lock` records its arguments and runs the command
// after "--" with KISS_STORE set, as the real one does.
func TestPublishScript(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ publish = {
		enable = true; store = "https://cache.example.org";
		secretKeyFile = "/etc/nix/cache key";
		tlsCertificate = "/w.pem"; tlsPrivateKey = "/w.key"; tlsCACertificate = "/ca.pem";
		systems = [
			{ flakeRef = "path:/src#web1"; marker = "web1"; }
			{ flakeRef = "path:/src#broken"; marker = "broken"; }
			{ flakeRef = "path:/src#db 1"; marker = "db1"; }
		];
	}; }`)
	script := r.Scripts["kiss-publish"]
	if script == "" {
		t.Fatalf("no kiss-publish script; scripts: %v", r.Scripts)
	}
	bashSyntax(t, "kiss-publish", script)
	svc := get(t, r.Config, "systemd", "services", "kiss-publish", "serviceConfig")
	if got := get(t, svc, "ExecStart"); got != "/nix/store/00000000000000000000000000000000-kiss-publish/bin/kiss-publish" {
		t.Errorf("ExecStart %v", got)
	}
	tools := fakeTools(t, map[string]string{
		"nix": `case "$*" in
  *build*'#broken') exit 1 ;;
  *build*) for a; do last=$a; done; echo "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-${last##*#}" ;;
esac`,
		"kiss": `while [ "$1" != -- ]; do shift; done; shift; KISS_STORE=http://127.0.0.1:9/tok exec "$@"`,
	})

	run := runScript(t, script, tools, nil, "nope")
	if run.code != 2 || !strings.Contains(run.stderr, "unknown marker: nope (configured: web1 broken db1)") || run.calls != "" {
		t.Errorf("unknown marker: code %d stderr %q calls %q", run.code, run.stderr, run.calls)
	}

	run = runScript(t, script, tools, nil, "web1")
	wantCalls := strings.Join([]string{
		"nix [--extra-experimental-features] [nix-command flakes] [build] [--no-link] [--print-out-paths] [path:/src#web1]",
		"kiss [with-lock] [--cert] [/w.pem] [--key] [/w.key] [--cacert] [/ca.pem] [https://cache.example.org/gcroots/web1] [/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-web1] [--] [" + "SCRIPT" + "] [__copy] [/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-web1]",
		"nix [--extra-experimental-features] [nix-command] [copy] [--to] [http://127.0.0.1:9/tok?compression=zstd&secret-key=/etc/nix/cache key] [/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-web1]",
		"",
	}, "\n")
	got := normalizeScriptPath(run.calls)
	if run.code != 0 || got != wantCalls {
		t.Errorf("publish web1: code %d stderr %q\ncalls:\n%s\nwant:\n%s", run.code, run.stderr, got, wantCalls)
	}

	// All systems: the broken build is reported and the others still go out.
	run = runScript(t, script, tools, nil)
	if run.code != 1 || !strings.Contains(run.stderr, "build failed: path:/src#broken") {
		t.Errorf("publish all: code %d stderr %q", run.code, run.stderr)
	}
	if n := strings.Count(run.calls, "kiss [with-lock]"); n != 2 || !strings.Contains(run.calls, "[https://cache.example.org/gcroots/db1]") {
		t.Errorf("publish all: %d with-lock calls:\n%s", n, run.calls)
	}
	if !strings.Contains(run.calls, "[path:/src#db 1]") {
		t.Errorf("flakeRef with a space was split:\n%s", run.calls)
	}

	// with-lock may hand over a bare directory: Nix must get file://.
	pathKiss := fakeTools(t, map[string]string{
		"kiss": `while [ "$1" != -- ]; do shift; done; shift; KISS_STORE=/var/lib/nix-cache exec "$@"`,
	})
	run = runScript(t, script, pathKiss+":"+tools, nil, "web1")
	if want := "[--to] [file:///var/lib/nix-cache?compression=zstd&secret-key=/etc/nix/cache key]"; run.code != 0 || !strings.Contains(run.calls, want) {
		t.Errorf("bare-path KISS_STORE: code %d calls:\n%s\nwant %s", run.code, run.calls, want)
	}

	// A bearer token reaches with-lock as $KISS_BEARER, never in argv.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustEval(t, nix, fmt.Sprintf(`{ publish = {
		enable = true; store = "https://cache.example.org"; bearerTokenFile = %s;
		systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
	}; }`, nixString(token)))
	bearerKiss := fakeTools(t, map[string]string{"kiss": `echo "bearer=$KISS_BEARER" >>"$CALLS"`})
	run = runScript(t, r.Scripts["kiss-publish"], bearerKiss+":"+tools, nil)
	if run.code != 0 || !strings.Contains(run.calls, "bearer=s3cr3t\n") || strings.Contains(run.calls, "[s3cr3t]") {
		t.Errorf("bearer: code %d calls:\n%s", run.code, run.calls)
	}

	// An S3 store: the marker goes before the query string.
	r = mustEval(t, nix, `{ publish = {
		enable = true; store = "s3://nix-cache?region=eu-central-1";
		systems = [ { flakeRef = "path:/src#web1"; marker = "web1"; } ];
	}; }`)
	run = runScript(t, r.Scripts["kiss-publish"], tools, nil)
	if want := "kiss [with-lock] [s3://nix-cache/gcroots/web1?region=eu-central-1] [/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-web1] [--]"; run.code != 0 || !strings.Contains(run.calls, want) {
		t.Errorf("s3 publish: code %d stderr %q calls:\n%s\nwant %s", run.code, run.stderr, run.calls, want)
	}
}

// normalizeScriptPath replaces the temp script path (what "$0" expands
// to) by SCRIPT in recorded calls.
func normalizeScriptPath(calls string) string {
	var out []string
	for _, line := range strings.Split(calls, "\n") {
		fields := strings.Split(line, "] [")
		for i, f := range fields {
			if strings.HasSuffix(f, "/script") {
				fields[i] = "SCRIPT"
			}
		}
		out = append(out, strings.Join(fields, "] ["))
	}
	return strings.Join(out, "\n")
}

// TestUpdateScript runs the generated kiss-update against fake curl,
// nix-store, nix-env and shutdown, with a real store path (built by Nix)
// as the published system whose switch-to-configuration records its call.
func TestUpdateScript(t *testing.T) {
	nix := testenv.Nix(t)
	r := mustEval(t, nix, `{ update = {
		enable = true; cacheUrl = "https://cache.example.org";
		tlsCertificate = "/r.pem"; tlsPrivateKey = "/r.key";
	}; }`)
	script := r.Scripts["kiss-update"]
	bashSyntax(t, "kiss-update", script)
	sc := get(t, r.Config, "systemd", "services", "kiss-update", "serviceConfig")
	if got := get(t, sc, "ExecStart"); got != "/nix/store/00000000000000000000000000000000-kiss-update/bin/kiss-update switch" {
		t.Errorf("ExecStart %v", got)
	}
	if get(t, r.Config, "systemd", "services", "kiss-update", "restartIfChanged") != false {
		t.Error("kiss-update would be restarted by the switch it performs")
	}

	sys := nix.Build(`mk "kiss-test-system" ''
		mkdir -p $out/bin
		printf '%s\n' '#!/bin/sh' 'echo "switch-to-configuration $*" >>"$CALLS"' >$out/bin/switch-to-configuration
		chmod +x $out/bin/switch-to-configuration
	''`)
	marker := t.TempDir() + "/marker"
	tools := fakeTools(t, map[string]string{
		"curl":      `for a; do last=$a; done; [ -f "$MARKER" ] && cat "$MARKER"; [ -f "$MARKER" ]`,
		"nix-store": ``,
		"nix-env":   ``,
		"shutdown":  ``,
	})
	env := []string{"MARKER=" + marker}

	if run := runScript(t, script, tools, env); run.code != 2 || !strings.Contains(run.stderr, "usage: kiss-update <switch|reboot>") {
		t.Errorf("no action: %d %q", run.code, run.stderr)
	}
	if run := runScript(t, script, tools, env, "bogus"); run.code != 2 {
		t.Errorf("bogus action: %d", run.code)
	}
	run := runScript(t, script, tools, env, "switch")
	if run.code != 0 || !strings.Contains(run.stdout, "no system published at https://cache.example.org/gcroots/host1") {
		t.Errorf("no marker: %d %q %q", run.code, run.stdout, run.stderr)
	}
	if strings.Contains(run.calls, "nix-store") {
		t.Errorf("realised without a marker:\n%s", run.calls)
	}
	wantCurl := "curl [--fail] [--silent] [--show-error] [--location] [--cert] [/r.pem] [--key] [/r.key] [https://cache.example.org/gcroots/host1]"
	if !strings.HasPrefix(run.calls, wantCurl+"\n") {
		t.Errorf("curl call:\n%s\nwant %s", run.calls, wantCurl)
	}

	if err := os.WriteFile(marker, []byte("garbage\n"+sys+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run = runScript(t, script, tools, env, "switch", "https://cache.example.org/gcroots/canary")
	want := strings.Join([]string{
		"curl [--fail] [--silent] [--show-error] [--location] [--cert] [/r.pem] [--key] [/r.key] [https://cache.example.org/gcroots/canary]",
		"nix-store [--option] [narinfo-cache-negative-ttl] [0] [--option] [extra-substituters] [https://cache.example.org?priority=10&tls-certificate=/r.pem&tls-private-key=/r.key] [--realise] [" + sys + "]",
		"nix-env [--profile] [/nix/var/nix/profiles/system] [--set] [" + sys + "]",
		"switch-to-configuration switch",
		"",
	}, "\n")
	if run.code != 0 || run.calls != want {
		t.Errorf("switch: code %d stderr %q\ncalls:\n%s\nwant:\n%s", run.code, run.stderr, run.calls, want)
	}
	// This test system has no kernel, unlike the booted one: a boot change.
	if !strings.Contains(run.stderr, "needs a reboot; activating userspace only") {
		t.Errorf("no reboot warning: %q", run.stderr)
	}

	// Already running the published system: nothing is realised or switched,
	// and a reboot scheduled earlier is cancelled.
	current := fakeTools(t, map[string]string{
		"curl":     `[ -f "$MARKER" ] && cat "$MARKER"`,
		"readlink": `echo "$CURRENT"`,
		"shutdown": ``,
	})
	run = runScript(t, script, current+":"+tools, append(env, "CURRENT="+sys), "switch")
	if run.code != 0 || strings.Contains(run.calls, "nix-store") || strings.Contains(run.calls, "switch-to-configuration") ||
		!strings.Contains(run.calls, "shutdown [-c]") {
		t.Errorf("already current: code %d stderr %q calls:\n%s", run.code, run.stderr, run.calls)
	}

	run = runScript(t, script, tools, env, "reboot")
	if run.code != 0 || !strings.Contains(run.calls, "switch-to-configuration boot\n") ||
		!strings.Contains(run.calls, "shutdown [-r] [+") || strings.Contains(run.calls, "switch-to-configuration switch") {
		t.Errorf("reboot: code %d stderr %q calls:\n%s", run.code, run.stderr, run.calls)
	}
}

// TestFlakeOutputs evaluates flake.nix with nixpkgs' lib and stand-in
// package sets (nixos/tests/flake-eval.nix): the outputs a Nix user
// expects, the package's version stamp and vendorHash, the app, the
// overlay, every module alone, the root default.nix, and each NixOS VM
// test — its nodes evaluated with the real module system (no failed
// assertions, the flake's package) and its Python test script parsed. The
// nginx-config check's script runs here with the real nginx and openssl.
// Building and running all this needs nixpkgs: `nix flake check`.
func TestFlakeOutputs(t *testing.T) {
	nix := testenv.Nix(t)
	lib := testenv.NixpkgsLib(t)
	out := nix.MustRun("nix-instantiate", "--eval", "--strict", "--json",
		filepath.Join(testenv.ModuleRoot(), "nixos", "tests", "flake-eval.nix"), "--arg", "lib", "import "+lib)
	var r struct {
		Packages, Modules, Checks, DarwinChecks, DevShell []string
		Package                                           struct{ Pname, Version, VendorHash string }
		App                                               struct{ Type, Program string }
		Overlay, Formatter, NginxScript                   string
		ModuleAlone                                       map[string][]string
		NonFlake                                          struct {
			Attrs            []string
			Kiss             string
			ModuleAssertions []string
			ModulePackage    string
		}
		VMTests map[string]struct {
			Name, TestScript string
			Nodes            map[string]struct {
				FailedAssertions, Units []string
				Package                 string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	vms := []string{"vm-gateway", "vm-nginx-mtls", "vm-prune", "vm-publish-update", "vm-tor"}
	if !reflect.DeepEqual(r.Packages, []string{"default", "kiss"}) ||
		!reflect.DeepEqual(r.Modules, []string{"default", "kiss", "prune", "publish", "serve", "update"}) ||
		!reflect.DeepEqual(r.Checks, append([]string{"kiss", "nginx-config", "nixos-modules-eval"}, vms...)) ||
		!reflect.DeepEqual(r.DarwinChecks, []string{"kiss", "nginx-config", "nixos-modules-eval"}) {
		t.Errorf("flake outputs: packages %q modules %q checks %q (darwin %q)", r.Packages, r.Modules, r.Checks, r.DarwinChecks)
	}
	version := "kiss-" + r.Package.Version
	if r.Package.Pname != "kiss" || r.Package.VendorHash != packageVendorHash(t) ||
		r.App.Type != "app" || r.App.Program != "/nix/store/00000000000000000000000000000000-"+version+"/bin/kiss" ||
		r.Overlay != version || r.Formatter != "nixfmt" || !strings.Contains(strings.Join(r.DevShell, " "), "go_1_26") {
		t.Errorf("package %+v app %+v overlay %q formatter %q devShell %q", r.Package, r.App, r.Overlay, r.Formatter, r.DevShell)
	}
	for m, failed := range r.ModuleAlone {
		if len(failed) > 0 {
			t.Errorf("nixosModules.%s alone: failed assertions %q", m, failed)
		}
	}
	if !reflect.DeepEqual(r.NonFlake.Attrs, []string{"kiss", "nixosModule", "overlay"}) || r.NonFlake.Kiss != version ||
		len(r.NonFlake.ModuleAssertions) != 0 || r.NonFlake.ModulePackage != "<package "+version+">" {
		t.Errorf("default.nix: %+v", r.NonFlake)
	}
	if len(r.VMTests) != len(vms) {
		t.Errorf("VM tests: %d, want %d", len(r.VMTests), len(vms))
	}
	for name, vm := range r.VMTests {
		if len(vm.Nodes) == 0 || !strings.HasPrefix(vm.Name, "kiss-") {
			t.Errorf("%s: name %q, nodes %v", name, vm.Name, vm.Nodes)
		}
		for node, n := range vm.Nodes {
			if len(n.FailedAssertions) > 0 || n.Package != "<package "+version+">" {
				t.Errorf("%s node %s: failed assertions %q, package %q", name, node, n.FailedAssertions, n.Package)
			}
		}
		py := exec.Command("python3", "-c", "import ast, sys; ast.parse(sys.stdin.read(), 'testScript')")
		py.Stdin = strings.NewReader(vm.TestScript)
		if b, err := py.CombinedOutput(); err != nil {
			t.Errorf("%s: testScript is not valid Python: %v\n%s", name, err, b)
		}
	}

	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", r.NginxScript)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "out="+filepath.Join(dir, "out"), "PATH=/usr/sbin:/usr/bin:/bin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nginx-config check: %v\n%s", err, b)
	} else if !strings.Contains(string(b), "syntax is ok") {
		t.Errorf("nginx -t output: %s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err != nil {
		t.Errorf("check produced no $out: %v", err)
	}
}

// TestFlakeCheckWithRealNix runs the real `nix flake check --no-build` (Nix
// 2.8, flakes enabled) on a copy of the flake, with the nixpkgs input
// overridden by a local flake made of nixpkgs' lib and the stand-in
// package sets (nixos/tests/fake-nixpkgs.nix): Nix's own checks of the
// output schema (apps, overlays, nixosModules, devShells, formatter,
// packages, checks) for this machine's system, and `nix eval` of the app
// through the flake. Nothing is built; with nixpkgs, `nix flake check` builds.
func TestFlakeCheckWithRealNix(t *testing.T) {
	nix := testenv.Nix(t)
	lib := testenv.NixpkgsLib(t)
	root := testenv.ModuleRoot()
	dir := t.TempDir()
	fake, src := filepath.Join(dir, "fake-nixpkgs"), filepath.Join(dir, "src")
	copyTree := func(from, to string) {
		t.Helper()
		if out, err := exec.Command("cp", "-r", from, to).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", from, err, out)
		}
	}
	for _, d := range []string{fake, src} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyTree(lib, filepath.Join(fake, "lib"))
	for _, f := range []string{"fake-nixpkgs.nix", "stub-pkgs.nix"} {
		copyTree(filepath.Join(root, "nixos", "tests", f), fake)
	}
	if err := os.WriteFile(filepath.Join(fake, "flake.nix"), []byte("{ outputs = { self }: import ./fake-nixpkgs.nix { lib = import ./lib; }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"flake.nix", "package.nix", "default.nix", "VERSION", "go.mod", "go.sum", "nixos"} {
		copyTree(filepath.Join(root, f), src)
	}
	flakes := []string{"--extra-experimental-features", "nix-command flakes"}
	override := []string{"--override-input", "nixpkgs", "path:" + fake, "--no-write-lock-file"}
	out, err := nix.Run("nix", append(append(append(flakes, "flake", "check", "--no-build"), override...), "path:"+src)...)
	if err != nil {
		t.Fatalf("nix flake check: %v\n%s", err, out)
	}
	// Nix's checks are live: a broken overlay is refused.
	flake := filepath.Join(src, "flake.nix")
	good := readFile(t, flake)
	bad := strings.Replace(good, "overlays.default = final: _prev: { kiss = final.callPackage", "overlays.default = self: super: { kiss = self.callPackage", 1)
	if bad == good {
		t.Fatal("flake.nix: overlays.default not found")
	}
	if err := os.WriteFile(flake, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := nix.Run("nix", append(append(append(flakes, "flake", "check", "--no-build"), override...), "path:"+src)...); err == nil ||
		!strings.Contains(out+err.Error(), "overlay does not take an argument named 'final'") {
		t.Errorf("nix flake check accepted an overlay without final: %v\n%s", err, out)
	}
	if err := os.WriteFile(flake, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	system := strings.TrimSpace(nix.MustRun("nix", append(flakes, "eval", "--impure", "--raw", "--expr", "builtins.currentSystem")...))
	prog := nix.MustRun("nix", append(append(append(flakes, "eval", "--raw"), override...), "path:"+src+"#apps."+system+".default.program")...)
	if !strings.HasSuffix(strings.TrimSpace(prog), "-kiss-"+strings.TrimSpace(readFile(t, filepath.Join(root, "VERSION")))+"/bin/kiss") {
		t.Errorf("apps.%s.default.program = %q", system, prog)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
