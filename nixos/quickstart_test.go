package nixos_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// docBlock is one fenced code block of a Markdown file, with the
// `<!-- quickstart: … -->` comment on the line before it, if any.
type docBlock struct {
	lang, note, text string
}

func markdownBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []docBlock
	var cur *docBlock
	prev := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{lang: strings.TrimPrefix(line, "```")}
			if n, ok := strings.CutPrefix(prev, "<!-- quickstart:"); ok {
				cur.note = strings.TrimSpace(strings.TrimSuffix(n, "-->"))
			}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	if err := sc.Err(); err != nil || cur != nil {
		t.Fatalf("%s: unterminated code block or read error %v", path, err)
	}
	return blocks
}

// TestQuickstart runs docs/quickstart.md as written, so the document
// cannot rot: every `sh` block in order in one shell (the PKI with the real
// openssl, the signing key with the real Nix 2.8, the deployment of the
// server's files, the first push with the real kiss with-lock through the
// real nginx, a reader's nix.conf, the substitution), the NixOS
// configuration block evaluated with the real module system and what it
// gives (the nginx config, the lease gateway's unit) started where the
// document deploys it, and the reader's sidecar nginx block started in the
// real nginx where the document shows it. Only names change:
// cache.example.org is localhost on a free port, and /etc/nix-cache,
// /etc/nix, /var/lib/nix-cache and /run/kiss are temporary directories.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nginx, Nix and kiss")
	}
	nix := testenv.Nix(t)
	kiss := testenv.KissBinary(t)
	testenv.NixpkgsLib(t)

	root := t.TempDir()
	dir := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	work, hooks, etcNix := dir("work"), dir("hooks"), dir("etc-nix")
	etcNixCache, cacheDir, runKiss := filepath.Join(root, "etc-nix-cache"), filepath.Join(root, "var-lib-nix-cache"), filepath.Join(root, "run-kiss")
	port, sidecar := testenv.FreePort(t), testenv.FreePort(t)
	rename := strings.NewReplacer(
		"https://cache.example.org", fmt.Sprintf("https://localhost:%d", port),
		"cache.example.org", "localhost",
		"/etc/nix-cache", etcNixCache,
		"/etc/nix/", etcNix+"/",
		"/var/lib/nix-cache", cacheDir,
		"/run/kiss", runKiss,
		"127.0.0.1:8081", fmt.Sprintf("127.0.0.1:%d", sidecar),
	)
	// The reader's nix.conf starts as this test's Nix configuration.
	base, err := os.ReadFile(filepath.Join(nix.ConfDir, "nix.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etcNix, "nix.conf"), base, 0o644); err != nil {
		t.Fatal(err)
	}

	// The script: the document's sh blocks, and a wait for the test where
	// the document deploys something that is not a shell command.
	var script strings.Builder
	script.WriteString(`__quickstart_wait() {
  : >"$QS_HOOKS/$1.req"
  for _ in $(seq 1 1200); do
    [ -e "$QS_HOOKS/$1.done" ] && return 0
    [ -e "$QS_HOOKS/$1.failed" ] && return 1
    sleep 0.1
  done
  echo "quickstart test: timed out waiting for $1" >&2
  return 1
}
set -euo pipefail
`)
	var nixosBlock, sidecarBlock string
	ran := 0
	for _, b := range markdownBlocks(t, filepath.Join(testenv.ModuleRoot(), "docs", "quickstart.md")) {
		switch {
		case b.note == "nixos":
			nixosBlock = b.text
			script.WriteString("__quickstart_wait nixos\n")
		case b.note == "sidecar":
			sidecarBlock = b.text
			script.WriteString("__quickstart_wait sidecar\n")
		case b.lang == "sh" && b.note == "":
			script.WriteString(rename.Replace(b.text))
			ran++
		case b.lang == "sh":
			t.Fatalf("a sh block with note %q: say what the test does with it", b.note)
		}
	}
	if ran < 6 || nixosBlock == "" || sidecarBlock == "" {
		t.Fatalf("docs/quickstart.md: %d sh blocks, NixOS block %v, sidecar block %v", ran, nixosBlock != "", sidecarBlock != "")
	}

	// The cache host after `nixos-rebuild switch`, as far as it serves the cache.
	var pruneLine string
	deploy := func() error {
		r, err := evalConfig(t, nix, fmt.Sprintf(`{ lib, ... }: { imports = [ (%s) ]; services.kiss.serve.listen = lib.mkForce [ "127.0.0.1:%d" ]; }`,
			rename.Replace(nixosBlock), port))
		if err != nil {
			return err
		}
		if len(r.FailedAssertions) > 0 {
			return fmt.Errorf("failed assertions: %q", r.FailedAssertions)
		}
		applyTmpfiles(t, strs(t, get(t, r.Config, "systemd", "tmpfiles")))
		argv, err := splitExecStart(get(t, r.Config, "systemd", "services", "kiss-leases", "serviceConfig", "ExecStart").(string), "")
		if err != nil {
			return err
		}
		sock := rename.Replace(strs(t, get(t, r.Config, "systemd", "sockets", "kiss-leases", "listenStreams"))[0])
		startSocketActivated(t, sock, append([]string{kiss}, argv[1:]...)...)
		testenv.Nginx(t, rename.Replace(get(t, r.Config, "nginx", "appendHttpConfig").(string)))
		pruneLine = get(t, r.Config, "systemd", "services", "kiss-prune", "serviceConfig", "ExecStart").(string)
		return nil
	}
	hooksDone := map[string]func() error{
		"nixos":   deploy,
		"sidecar": func() error { testenv.Nginx(t, rename.Replace(sidecarBlock)); return nil },
	}

	scriptFile := filepath.Join(root, "quickstart.sh")
	if err := os.WriteFile(scriptFile, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range nix.Env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "NIX_CONF_DIR=") {
			env = append(env, kv)
		}
	}
	var out syncBuffer
	cmd := exec.Command("bash", scriptFile)
	cmd.Dir = work
	cmd.Env = append(env, "PATH="+filepath.Dir(kiss)+":/usr/sbin:/usr/bin:/sbin:/bin", "NIX_CONF_DIR="+etcNix, "QS_HOOKS="+hooks)
	cmd.Stdout, cmd.Stderr = &out, &out
	p := testenv.StartProcess(t, "quickstart", cmd)
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if exited, _ := p.Exited(); exited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quick start did not finish in 4 minutes:\n%s", out.String())
		}
		for name, do := range hooksDone {
			if _, err := os.Stat(filepath.Join(hooks, name+".req")); err != nil {
				continue
			}
			delete(hooksDone, name)
			mark := ".done"
			if err := do(); err != nil {
				t.Errorf("%s: %v", name, err)
				mark = ".failed"
			}
			if err := os.WriteFile(filepath.Join(hooks, name+mark), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := p.Exited(); err != nil {
		t.Fatalf("the quick start failed: %v\n%s", err, out.String())
	}

	// What the document promises: the marker names the pushed path, which
	// arrived signed and compressed, and the reader's copy shows the signature.
	marker, err := os.ReadFile(filepath.Join(cacheDir, "gcroots", "web1"))
	if err != nil || !strings.HasPrefix(string(marker), "/nix/store/") {
		t.Fatalf("marker gcroots/web1: %v %q\n%s", err, marker, out.String())
	}
	path := strings.TrimSpace(string(marker))
	narinfo, err := os.ReadFile(filepath.Join(cacheDir, testenv.StoreHash(path)+".narinfo"))
	if err != nil || !strings.Contains(string(narinfo), "Sig: localhost-1:") || !strings.Contains(string(narinfo), "Compression: zstd") {
		t.Errorf("narinfo: %v\n%s", err, narinfo)
	}
	if !strings.Contains(out.String(), path) || !strings.Contains(out.String(), "localhost-1:") {
		t.Errorf("the reader's path-info does not show the signed path:\n%s", out.String())
	}
	if leases, _ := os.ReadDir(filepath.Join(cacheDir, "gcroots", ".lock")); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}
	// The pruner's unit on this cache keeps what the marker roots.
	pr := execStart(t, pruneLine, kiss, "")
	pr.Env = append(env, "PATH=/usr/bin:/bin")
	if b, err := pr.CombinedOutput(); err != nil {
		t.Errorf("kiss-prune: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, testenv.StoreHash(path)+".narinfo")); err != nil {
		t.Errorf("the pruner deleted the pushed path: %v", err)
	}
}
