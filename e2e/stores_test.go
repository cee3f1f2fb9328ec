package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// exitStore is cmd/kiss's ExitStore: the store cannot be used.
const exitStore = 3

// TestMissingStoreIsAnError (issue 11 item 6): a store that does not exist
// is an error naming it (exit 3), and a command that only reads creates
// nothing: not the typo'd directory, not a directory named "file:relative".
func TestMissingStoreIsAnError(t *testing.T) {
	base := t.TempDir()
	typo := filepath.Join(base, "typo")
	for _, args := range [][]string{
		{"prune", typo},
		{"prune", "--dry-run", typo},
		{"prune", "file://" + typo},
		{"roots", "list", typo},
		{"locks", "list", typo},
		{"roots", "add", typo, "web", fakePath},
		{"roots", "rm", typo, "web"},
	} {
		res := testenv.RunKiss(t, nil, args...)
		if res.ExitCode != exitStore {
			t.Errorf("kiss %s: exit %d, want %d", strings.Join(args, " "), res.ExitCode, exitStore)
		}
		if !strings.Contains(res.Stderr, typo) || !strings.Contains(res.Stderr, "does not exist") {
			t.Errorf("kiss %s: the error does not say that %s does not exist:\n%s", strings.Join(args, " "), typo, res.Stderr)
		}
		if _, err := os.Lstat(typo); err == nil {
			t.Fatalf("kiss %s created %s", strings.Join(args, " "), typo)
		}
	}

	// file:relative is not a relative directory named "file:relative".
	cwd := t.TempDir()
	res := testenv.RunKissIn(t, cwd, nil, "prune", "--dry-run", "file:relative")
	if res.ExitCode != 2 {
		t.Errorf("kiss prune file:relative: exit %d, want 2 (usage)", res.ExitCode)
	}
	if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
		t.Errorf("kiss prune file:relative created %v in its working directory", ents[0].Name())
	}

	// Control: a plain relative path to an existing cache is still a store.
	noErr(t, os.MkdirAll(filepath.Join(cwd, "cache", "gcroots"), 0o755))
	noErr(t, os.WriteFile(filepath.Join(cwd, "cache", "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644))
	if res := testenv.RunKissIn(t, cwd, nil, "roots", "list", "cache"); res.ExitCode != 0 {
		t.Errorf("kiss roots list cache (relative): exit %d", res.ExitCode)
	}
}

// TestPruneRefusesWhatIsNotACache (issue 11 item 6): a directory without
// nix-cache-info is not a binary cache; prune refuses it (exit 4) and
// deletes nothing, unless --allow-no-cache-info. And gcroots being a file
// is said so, not reported as "no roots".
func TestPruneRefusesWhatIsNotACache(t *testing.T) {
	dir := t.TempDir()
	c := newRootLossCache(t, "file://"+dir)
	noErr(t, os.Remove(filepath.Join(dir, "nix-cache-info")))
	before := snapshotStore(t, c.st)
	for _, extra := range [][]string{nil, {"--dry-run"}} {
		res := kissPrune(t, c.storeURL, extra...)
		c.requireRefused(t, before, res, "nix-cache-info")
	}
	res := kissPrune(t, c.storeURL, "--allow-no-cache-info")
	if res.ExitCode != 0 {
		t.Fatalf("prune --allow-no-cache-info: exit %d\n%s", res.ExitCode, res.Stderr)
	}
	if c.present(t, c.garbage) || !c.present(t, c.keep) {
		t.Errorf("--allow-no-cache-info: the prune did not prune (garbage present %v, root present %v)", c.present(t, c.garbage), c.present(t, c.keep))
	}

	// gcroots is a regular file.
	dir = t.TempDir()
	c = newRootLossCache(t, "file://"+dir)
	noErr(t, os.RemoveAll(filepath.Join(dir, "gcroots")))
	noErr(t, os.WriteFile(filepath.Join(dir, "gcroots"), []byte(c.keep.StorePath+"\n"), 0o644))
	before = snapshotStore(t, c.st)
	c.requireRefused(t, before, kissPrune(t, c.storeURL), "gcroots in "+c.st.URL()+" is a file")
	if res := testenv.RunKiss(t, nil, "roots", "list", c.storeURL); res.ExitCode != exitRefused || !strings.Contains(res.Stderr, "is a file") {
		t.Errorf("roots list with gcroots a file: exit %d\n%s", res.ExitCode, res.Stderr)
	}
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
