package nixos_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

var vendorHashLine = regexp.MustCompile(`(?m)^\s*vendorHash = "(sha256-[A-Za-z0-9+/=]+)";$`)

// packageVendorHash reads the vendorHash line of package.nix.
func packageVendorHash(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := vendorHashLine.FindAllSubmatch(b, -1)
	if len(m) != 1 {
		t.Fatalf("package.nix: want exactly one line `vendorHash = \"sha256-…\";`, found %d", len(m))
	}
	return string(m[0][1])
}

// goModulesHash computes what nixpkgs' buildGoModule (proxyVendor = true)
// checks vendorHash against: `go mod download` for the repository's go.mod
// and go.sum into a fresh GOPATH with the local toolchain, then the NAR hash
// of pkg/mod/cache/download without its sumdb/ directory. The modules come
// from this machine's module cache through a file:// proxy where it has
// them (offline, and the same bytes: a module zip is checked against
// go.sum), from $GOPROXY otherwise.
func goModulesHash(t *testing.T, nix *testenv.NixEnv, modDir string) string {
	t.Helper()
	gopath := t.TempDir()
	proxy := os.Getenv("GOPROXY")
	if proxy == "" || proxy == "off" {
		proxy = "https://proxy.golang.org"
	}
	if out, err := exec.Command(testenv.GoTool(), "env", "GOMODCACHE").Output(); err == nil {
		if local := filepath.Join(strings.TrimSpace(string(out)), "cache", "download"); local != "cache/download" {
			if _, err := os.Stat(local); err == nil {
				proxy = "file://" + local + "," + proxy
			}
		}
	}
	cmd := exec.Command(testenv.GoTool(), "mod", "download")
	cmd.Dir = modDir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + gopath,
		"GOENV=off", // no user go.env: GOPROXY, GOPRIVATE, GOFLAGS from here only
		"GOPATH=" + gopath,
		"GOMODCACHE=" + filepath.Join(gopath, "pkg", "mod"),
		"GOCACHE=" + filepath.Join(gopath, "cache"),
		"GOTOOLCHAIN=local",
		"GOFLAGS=-mod=mod",
		"GOPROXY=" + proxy,
		"GOSUMDB=off", // go.sum checks every module; the sumdb cache is deleted anyway
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	download := filepath.Join(gopath, "pkg", "mod", "cache", "download")
	if err := os.RemoveAll(filepath.Join(download, "sumdb")); err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(nix.MustRun("nix", "hash", "path", "--type", "sha256", download))
	if !strings.HasPrefix(hash, "sha256-") {
		t.Fatalf("nix hash path printed %q", hash)
	}
	// Module files are read-only; let t.TempDir's cleanup remove them.
	_ = exec.Command("chmod", "-R", "u+w", gopath).Run()
	return hash
}

// TestVendorHash recomputes package.nix's vendorHash from go.mod and
// go.sum. Whenever they change (a dependency added, removed or bumped), the
// hash changes and this test fails, printing the line to put into
// package.nix.
func TestVendorHash(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the module graph (seconds) and runs nix hash")
	}
	nix := testenv.Nix(t)
	// go.mod and go.sum alone: `go mod download` needs nothing else, and a
	// copy keeps it from touching the repository.
	mod := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mod, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := goModulesHash(t, nix, mod)
	if want := packageVendorHash(t); got != want {
		t.Fatalf("package.nix's vendorHash is stale (go.mod/go.sum changed): it says %s, the module download hashes to %s.\n"+
			"Replace the line in package.nix with:\n\n  vendorHash = %q;\n", want, got, got)
	}
}

// TestPackageNix evaluates package.nix with nixpkgs' lib and a stand-in
// buildGoModule that returns its arguments: the version comes from VERSION
// and is stamped with -X into the symbol kiss prints for --version (built
// here with exactly those ldflags), the source filter keeps what the Go
// build reads and drops docs, modules and Terraform, and the build is the
// proxyVendor one the vendorHash above is computed for.
func TestPackageNix(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kiss with the package's ldflags")
	}
	nix := testenv.Nix(t)
	lib := testenv.NixpkgsLib(t)
	root := testenv.ModuleRoot()
	out := nix.MustRun("nix-instantiate", "--eval", "--strict", "--json", "--expr", fmt.Sprintf(`
		let
		  lib = import %[1]s;
		  p = import %[2]s/package.nix { inherit lib; buildGoModule = args: args; };
		  keep = rel: p.src.filter "%[2]s/${rel}" "regular";
		in {
		  inherit (p) pname version vendorHash proxyVendor subPackages ldflags doCheck;
		  mainProgram = p.meta.mainProgram;
		  kept = builtins.filter keep [ "cmd/kiss/main.go" "go.mod" "go.sum" "gc/testdata/x.narinfo" "docs/nixos.md"
		    "nixos/serve.nix" "terraform/main.tf" "README.md" "flake.nix" "VERSION" ];
		}`, lib, root))
	var p struct {
		Pname, Version, VendorHash, MainProgram string
		ProxyVendor, DoCheck                    bool
		SubPackages, Ldflags, Kept              []string
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(version))
	if p.Pname != "kiss" || p.Version != want || p.MainProgram != "kiss" || !p.ProxyVendor || strings.Join(p.SubPackages, " ") != "cmd/kiss" {
		t.Errorf("package: %+v (VERSION %q)", p, want)
	}
	if p.VendorHash != packageVendorHash(t) {
		t.Errorf("vendorHash %q is not the package.nix line %q", p.VendorHash, packageVendorHash(t))
	}
	if got := strings.Join(p.Kept, " "); got != "cmd/kiss/main.go go.mod go.sum gc/testdata/x.narinfo" {
		t.Errorf("source filter keeps %q", got)
	}
	stamp := "-X main.version=" + want
	if !strings.Contains(strings.Join(p.Ldflags, " "), stamp) {
		t.Fatalf("ldflags %q lack %q", p.Ldflags, stamp)
	}
	// Go ignores -X for a symbol that does not exist: build and ask.
	bin := filepath.Join(t.TempDir(), "kiss")
	build := exec.Command(testenv.GoTool(), "build", "-o", bin, "-ldflags", strings.Join(p.Ldflags, " "), "./cmd/kiss")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	v, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), want) {
		t.Errorf("kiss --version: %v %q, want %q", err, v, want)
	}
}
