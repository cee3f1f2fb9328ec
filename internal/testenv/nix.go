package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ErrCoroutineFinished marks the Nix 2.8 failure "coroutine has finished"
// (NixOS/nix#6417), seen in about one of ten concurrent pushes to one cache.
// It is a client bug, not cache corruption: retrying the same command is safe.
var ErrCoroutineFinished = errors.New("nix: coroutine has finished (NixOS/nix#6417)")

// NixEnv is a Nix 2.8 client configured in throw-away directories:
// NIX_CONF_DIR with nix-command enabled, no sandbox, no substituters and
// narinfo cache TTLs of 0; HOME and XDG_* in temp dirs. Builds go into the
// real /nix/store (root, no daemon), which every test shares; Nonce makes
// each NixEnv's derivations unique, and nothing registers a GC root.
type NixEnv struct {
	t       testing.TB
	Dir     string // root of this environment's temp dirs
	ConfDir string // NIX_CONF_DIR
	Nonce   string // mixed into every derivation built by Build/BuildAttrs
	// Env is the environment for nix commands (os.Environ minus NIX_* plus ours).
	Env []string
}

// Nix returns a fresh Nix environment. It skips (locally) or fails (CI,
// KISS_REQUIRE_NIX) when the nix client is missing.
func Nix(t testing.TB) *NixEnv {
	t.Helper()
	SkipShort(t, "a test with the real Nix client")
	if _, err := exec.LookPath("nix"); err != nil {
		requireComponent(t, "nix", err, "KISS_REQUIRE_NIX")
	}
	dir := t.TempDir()
	n := &NixEnv{t: t, Dir: dir, ConfDir: filepath.Join(dir, "etc-nix"), Nonce: randHex(8)}
	for _, d := range []string{n.ConfDir, "home", "cache", "config", "data"} {
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := strings.Join([]string{
		"experimental-features = nix-command",
		"sandbox = false",
		"substituters =",
		"build-users-group = " + buildUsersGroup(),
		"narinfo-cache-positive-ttl = 0",
		"narinfo-cache-negative-ttl = 0",
		"keep-build-log = true",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(n.ConfDir, "nix.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NIX_") || k == "HOME" || strings.HasPrefix(k, "XDG_") {
			continue
		}
		n.Env = append(n.Env, kv)
	}
	n.Env = append(n.Env,
		"NIX_CONF_DIR="+n.ConfDir,
		"NIX_PATH=",
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	return n
}

// buildUsersGroup is "nixbld" when that group exists (Debian's nix-bin
// creates it), else empty: root then builds as itself, which the
// derivations used in tests (no sandbox, /bin/sh) do not mind.
func buildUsersGroup() string {
	data, err := os.ReadFile("/etc/group")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "nixbld:") {
				return "nixbld"
			}
		}
	}
	return ""
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// SetEnv adds or replaces one variable in the nix commands' environment
// (e.g. NIX_SSL_CERT_FILE for an https cache with a private CA).
func (n *NixEnv) SetEnv(key, value string) {
	out := n.Env[:0:0]
	for _, kv := range n.Env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	n.Env = append(out, key+"="+value)
}

// NixError is a failed nix command with its output.
type NixError struct {
	Args     []string
	ExitCode int
	Stderr   string
}

func (e *NixError) Error() string {
	return fmt.Sprintf("%s: exit %d: %s", strings.Join(e.Args, " "), e.ExitCode, strings.TrimSpace(e.Stderr))
}

// Is makes errors.Is(err, ErrCoroutineFinished) recognise the Nix 2.8 bug.
func (e *NixError) Is(target error) bool {
	return target == ErrCoroutineFinished && IsCoroutineFinished(e.Stderr)
}

// IsCoroutineFinished reports whether nix output shows exactly the
// NixOS/nix#6417 failure ("error: coroutine has finished").
func IsCoroutineFinished(output string) bool {
	return strings.Contains(output, "coroutine has finished")
}

// Run runs a nix command (nix, nix-build, nix-store, …) in this
// environment, logs it with its output and returns stdout. A failure is
// returned as *NixError.
func (n *NixEnv) Run(name string, args ...string) (string, error) {
	n.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = n.Env
	cmd.Dir = n.Dir
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		code = ee.ExitCode()
	}
	n.t.Logf("$ %s %s  (exit %d, %v)\n%s%s", name, strings.Join(args, " "), code,
		time.Since(start).Round(time.Millisecond), indent("stdout", so.String()), indent("stderr", se.String()))
	if code != 0 {
		return so.String(), &NixError{Args: append([]string{name}, args...), ExitCode: code, Stderr: se.String()}
	}
	return so.String(), nil
}

// MustRun is Run that fails the test on error.
func (n *NixEnv) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatalf("testenv: %v", err)
	}
	return out
}

// RetryCoroutine runs f up to attempts times while it fails with
// ErrCoroutineFinished (NixOS/nix#6417); any other error, or success, ends
// the loop at once. It returns f's last error.
func RetryCoroutine(attempts int, f func() error) error {
	var err error
	for i := 0; i < attempts; i++ {
		if err = f(); err == nil || !errors.Is(err, ErrCoroutineFinished) {
			return err
		}
		time.Sleep(time.Duration(50*(i+1)) * time.Millisecond)
	}
	return err
}

// Prelude is the Nix code in scope of every expression given to Build and
// BuildAttrs:
//
//	mk "name" "shell script"   a derivation built by /bin/sh with
//	                           PATH=/usr/bin:/bin and this env's nonce;
//	                           interpolating another derivation (${a})
//	                           into the script makes it a dependency.
//	nonce                      the env's nonce as a string.
func (n *NixEnv) Prelude() string {
	return fmt.Sprintf(`let
  nonce = %q;
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    KISS_TEST_NONCE = nonce;
    args = [ "-c" script ];
  };
in
`, n.Nonce)
}

func (n *NixEnv) writeExpr(expr string) string {
	f, err := os.CreateTemp(n.Dir, "expr-*.nix")
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := f.WriteString(n.Prelude() + expr + "\n"); err != nil {
		n.t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

// Build builds a Nix expression (with Prelude in scope) that evaluates to
// one derivation and returns its output path. No GC root is registered.
func (n *NixEnv) Build(expr string) string {
	n.t.Helper()
	file := n.writeExpr(expr)
	out := strings.Fields(n.MustRun("nix-build", "--no-out-link", file))
	if len(out) != 1 {
		n.t.Fatalf("testenv: nix-build gave %d paths, want 1: %q", len(out), out)
	}
	return out[0]
}

// BuildAttrs builds an expression (with Prelude in scope) that evaluates
// to an attribute set of derivations and returns each attribute's output
// path. Attributes not listed in names are built too when names is empty.
func (n *NixEnv) BuildAttrs(expr string, names ...string) map[string]string {
	n.t.Helper()
	file := n.writeExpr(expr)
	if len(names) == 0 {
		js := n.MustRun("nix-instantiate", "--eval", "--json", "--strict", "-E",
			fmt.Sprintf("builtins.attrNames (import %s)", file))
		if err := json.Unmarshal([]byte(js), &names); err != nil {
			n.t.Fatalf("testenv: attrNames: %v", err)
		}
	}
	sort.Strings(names)
	args := []string{"--no-out-link", file}
	for _, a := range names {
		args = append(args, "-A", a)
	}
	out := strings.Fields(n.MustRun("nix-build", args...))
	if len(out) != len(names) {
		n.t.Fatalf("testenv: nix-build gave %d paths for %d attributes: %q", len(out), len(names), out)
	}
	res := make(map[string]string, len(names))
	for i, a := range names {
		res[a] = out[i]
	}
	return res
}

// GenerateKey makes a signing key pair with `nix key generate-secret`
// and returns the secret key file and the public key ("name:base64").
func (n *NixEnv) GenerateKey(name string) (secretKeyFile, publicKey string) {
	n.t.Helper()
	sk := n.MustRun("nix", "key", "generate-secret", "--key-name", name)
	secretKeyFile = filepath.Join(n.Dir, "key-"+name+".sec")
	if err := os.WriteFile(secretKeyFile, []byte(sk), 0o600); err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.Command("nix", "key", "convert-secret-to-public")
	cmd.Env = n.Env
	cmd.Stdin = strings.NewReader(sk)
	pk, err := cmd.Output()
	if err != nil {
		n.t.Fatalf("testenv: nix key convert-secret-to-public: %v", err)
	}
	return secretKeyFile, strings.TrimSpace(string(pk))
}

// CopyTo pushes paths (and their closures) to a cache URL with `nix copy
// --to`, retrying the NixOS/nix#6417 failure up to three times.
func (n *NixEnv) CopyTo(url string, paths ...string) error {
	n.t.Helper()
	return RetryCoroutine(3, func() error {
		_, err := n.Run("nix", append([]string{"copy", "--to", url}, paths...)...)
		return err
	})
}

// CopyDerivationTo pushes .drv files themselves (not their outputs) with
// `nix copy --derivation --to`: what a narinfo's Deriver names.
func (n *NixEnv) CopyDerivationTo(url string, drvs ...string) error {
	n.t.Helper()
	return RetryCoroutine(3, func() error {
		_, err := n.Run("nix", append([]string{"copy", "--derivation", "--to", url}, drvs...)...)
		return err
	})
}

// CopyLogTo uploads the build logs of drvs with `nix store copy-log --to`
// (to log/<drv basename> in the cache).
func (n *NixEnv) CopyLogTo(url string, drvs ...string) error {
	n.t.Helper()
	_, err := n.Run("nix", append([]string{"store", "copy-log", "--to", url}, drvs...)...)
	return err
}

// NewStore returns a fresh, empty directory for a chroot Nix store
// (`--store DIR`), to substitute into.
func (n *NixEnv) NewStore() string {
	n.t.Helper()
	d, err := os.MkdirTemp(n.Dir, "store-")
	if err != nil {
		n.t.Fatal(err)
	}
	return d
}

// SubstituteFrom copies paths and their closures from the cache at url
// into the chroot store storeDir, with signatures checked against
// publicKey (`nix copy --from URL --to DIR --option trusted-public-keys`).
func (n *NixEnv) SubstituteFrom(url, storeDir, publicKey string, paths ...string) error {
	n.t.Helper()
	args := []string{"copy", "--from", url, "--to", storeDir,
		"--option", "trusted-public-keys", publicKey,
		"--option", "require-sigs", "true",
		"--option", "narinfo-cache-positive-ttl", "0",
		"--option", "narinfo-cache-negative-ttl", "0",
	}
	return RetryCoroutine(3, func() error {
		_, err := n.Run("nix", append(args, paths...)...)
		return err
	})
}

// Closure returns the sorted closure of paths (`nix path-info -r`) in the
// given store ("" for the default /nix/store, a directory for a chroot
// store, or a cache URL).
func (n *NixEnv) Closure(store string, paths ...string) ([]string, error) {
	n.t.Helper()
	args := []string{"path-info", "-r"}
	if store != "" {
		args = append(args, "--store", store)
	}
	out, err := n.Run("nix", append(args, paths...)...)
	if err != nil {
		return nil, err
	}
	res := strings.Fields(out)
	sort.Strings(res)
	return res, nil
}

// Deriver returns the .drv an output path was built from (`nix-store -qd`).
func (n *NixEnv) Deriver(path string) string {
	n.t.Helper()
	d := strings.TrimSpace(n.MustRun("nix-store", "-qd", path))
	if !strings.HasSuffix(d, ".drv") {
		n.t.Fatalf("testenv: nix-store -qd %s gave %q", path, d)
	}
	return d
}

// StoreHash returns the 32-character hash part of a store path
// ("/nix/store/<hash>-name" → "<hash>"): the narinfo key is hash+".narinfo".
func StoreHash(path string) string {
	base := filepath.Base(path)
	h, _, _ := strings.Cut(base, "-")
	return h
}
