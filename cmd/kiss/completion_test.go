package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

func TestManPage(t *testing.T) {
	code, out, stderr := runKiss(t, "man")
	if code != ExitOK || !strings.Contains(out, ".TH kiss 1") {
		t.Fatalf("kiss man: exit %d, %q…, %s", code, out[:min(len(out), 200)], stderr)
	}
	app := newApp(nil, nil)
	for _, c := range app.Commands {
		if !strings.Contains(out, c.Name) {
			t.Errorf("the man page lacks the command %s", c.Name)
		}
	}
	if code, _, _ := runKiss(t, "completion", "tcsh"); code != ExitUsage {
		t.Errorf("completion tcsh: exit %d, want %d", code, ExitUsage)
	}
}

// TestCompletionBash: the bash script, in a real bash, completes a command
// and a command's flag from the real binary.
func TestCompletionBash(t *testing.T) {
	bin := testenv.KissBinary(t)
	script := `source <(kiss completion bash)
COMP_WORDS=(kiss pru); COMP_CWORD=1; _kiss_complete; echo "${COMPREPLY[*]}"
COMP_WORDS=(kiss prune /tmp/x --dry); COMP_CWORD=3; _kiss_complete; echo "${COMPREPLY[*]}"
COMP_WORDS=(kiss roots l); COMP_CWORD=2; _kiss_complete; echo "${COMPREPLY[*]}"`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "prune\n--dry-run\nlist"; got != want {
		t.Errorf("completions %q, want %q", got, want)
	}
}

// TestPackageInstallsCompletions: package.nix's postInstall, evaluated with
// nixpkgs' lib and run in bash against the real binary (installShellFiles'
// functions stood in for), installs all three completions and the man page.
func TestPackageInstallsCompletions(t *testing.T) {
	bin := testenv.KissBinary(t)
	nix := testenv.Nix(t)
	lib := testenv.NixpkgsLib(t)
	root := testenv.ModuleRoot()
	post := nix.MustRun("nix-instantiate", "--eval", "--strict", "--json", "--expr", fmt.Sprintf(`
		(import %[2]s/package.nix {
		  lib = import %[1]s;
		  buildGoModule = args: args;
		  installShellFiles = "installShellFiles";
		  stdenv = { buildPlatform.canExecute = _: true; hostPlatform = { }; };
		}).postInstall`, lib, root))
	out := t.TempDir()
	if err := os.MkdirAll(filepath.Join(out, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(out, "bin", "kiss")); err != nil {
		t.Fatal(err)
	}
	var script string
	if err := json.Unmarshal([]byte(post), &script); err != nil {
		t.Fatal(err)
	}
	got := t.TempDir()
	file := filepath.Join(t.TempDir(), "postInstall.sh")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	stubs := fmt.Sprintf(`
installShellCompletion() { shift 2; while [ $# -gt 0 ]; do cat "$2" > %[1]s/"${1#--}"; shift 2; done; }
installManPage() { cp "$1" %[1]s/; }
out=%[2]s
cd %[4]s
source %[3]s
`, got, out, file, t.TempDir())
	cmd := exec.Command("bash", "-c", stubs)
	cmd.Stdin = nil
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postInstall: %v\n%s\n%s", err, b, script)
	}
	for f, want := range map[string]string{"bash": "complete -o bashdefault", "zsh": "#compdef kiss", "fish": "complete -c kiss", "kiss.1": ".TH kiss 1"} {
		b, err := os.ReadFile(filepath.Join(got, f))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %v, lacks %q", f, err, want)
		}
	}
}
