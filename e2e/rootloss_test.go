package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// Root losses (issue 11, items 1–3): ways a rooted path used to be deleted
// with exit 0. Each scenario runs the real kiss binary on a cache of
// synthetic paths: a control root (gcroots/keep), the root under test with
// a dependency, and garbage that a prune must delete, so "kept" is known to
// come from the root under test and not from a prune that deleted nothing.

// rootLossCache is one such cache on file:// (or the bucket behind storeURL).
type rootLossCache struct {
	storeURL      string
	st            storage.Store
	keep, keepDep *synthPath // rooted by gcroots/keep
	root, dep     *synthPath // the root under test and its dependency
	garbage       *synthPath
}

func newRootLossCache(t *testing.T, storeURL string) *rootLossCache {
	t.Helper()
	testenv.SkipShort(t, "an end-to-end scenario with the kiss binary")
	src := t.TempDir()
	c := &rootLossCache{storeURL: storeURL, st: openStore(t, storeURL)}
	c.keepDep = mkSynthPath(t, src, "keep-dep")
	c.keep = mkSynthPath(t, src, "keep", c.keepDep)
	c.dep = mkSynthPath(t, src, "root-dep")
	c.root = mkSynthPath(t, src, "root", c.dep)
	c.garbage = mkSynthPath(t, src, "garbage")
	ctx := e2eCtx(t)
	if _, err := c.st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*synthPath{c.keepDep, c.keep, c.dep, c.root, c.garbage} {
		putSynth(t, c.st, p)
	}
	if _, err := c.st.Put(ctx, "gcroots/keep", strings.NewReader(c.keep.StorePath+"\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStoreClockPast(t, c.st) // so --grace 0s may delete what was just written
	return c
}

// present reports whether every object of p is in the store.
func (c *rootLossCache) present(t *testing.T, p *synthPath) bool {
	t.Helper()
	for _, k := range []string{p.InfoKey, p.NarKey} {
		if _, err := c.st.Stat(e2eCtx(t), k); err != nil {
			return false
		}
	}
	return true
}

// requirePruned: the prune succeeded, the root under test and the control
// root kept their closures, and the garbage went.
func (c *rootLossCache) requirePruned(t *testing.T, res testenv.KissResult) {
	t.Helper()
	if res.ExitCode != 0 {
		t.Fatalf("prune: exit %d, want 0\n%s", res.ExitCode, res.Stderr)
	}
	for _, p := range []*synthPath{c.root, c.dep, c.keep, c.keepDep} {
		if !c.present(t, p) {
			t.Errorf("ROOT LOSS: %s was deleted although it is rooted", p.StorePath)
		}
	}
	if c.present(t, c.garbage) {
		t.Errorf("control: the garbage %s survived a successful prune", c.garbage.StorePath)
	}
}

// requireRefused: exit 4 and not one object changed.
func (c *rootLossCache) requireRefused(t *testing.T, before snapshot, res testenv.KissResult, why string) {
	t.Helper()
	if res.ExitCode != exitRefused {
		t.Errorf("prune: exit %d, want %d (refused)", res.ExitCode, exitRefused)
	}
	if !strings.Contains(res.Stderr, why) {
		t.Errorf("the refusal does not say %q:\n%s", why, res.Stderr)
	}
	if d := diffSnapshots(before, snapshotStore(t, c.st), "before", "after"); len(d) > 0 {
		t.Errorf("a refused prune changed the cache:\n%s", strings.Join(d, "\n"))
	}
}

// TestSymlinkedMarkers (issue 11 item 1): on file://, a marker that is a
// symlink to a store path is a root named by its target (which need not
// resolve on the cache host: the format of nix-cache-cut and of Nix's own
// gcroots), a symlink to a marker file is read like that file, and any
// other entry under gcroots/ that cannot be read as a root stops the prune.
func TestSymlinkedMarkers(t *testing.T) {
	t.Run("to_a_store_path", func(t *testing.T) {
		dir := t.TempDir()
		c := newRootLossCache(t, "file://"+dir)
		if err := os.Symlink(c.root.StorePath, filepath.Join(dir, "gcroots", "nix-style")); err != nil {
			t.Fatal(err)
		}
		list := testenv.RunKiss(t, nil, "roots", "list", c.storeURL)
		if list.ExitCode != 0 || !strings.Contains(list.Stdout, "gcroots/nix-style") {
			t.Errorf("roots list (exit %d) does not show the symlinked root:\n%s", list.ExitCode, list.Stdout)
		}
		c.requirePruned(t, kissPrune(t, c.storeURL))
	})
	t.Run("to_a_store_path_below_it", func(t *testing.T) {
		dir := t.TempDir()
		c := newRootLossCache(t, "file://"+dir)
		if err := os.Symlink(c.root.StorePath+"/bin/root", filepath.Join(dir, "gcroots", "bin-link")); err != nil {
			t.Fatal(err)
		}
		c.requirePruned(t, kissPrune(t, c.storeURL))
	})
	t.Run("to_a_marker_file_elsewhere", func(t *testing.T) {
		dir := t.TempDir()
		c := newRootLossCache(t, "file://"+dir)
		managed := filepath.Join(t.TempDir(), "host-00")
		if err := os.WriteFile(managed, []byte(c.root.StorePath+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "gcroots", "hosts"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(managed, filepath.Join(dir, "gcroots", "hosts", "host-00")); err != nil {
			t.Fatal(err)
		}
		c.requirePruned(t, kissPrune(t, c.storeURL))
	})
	t.Run("relative_link_to_another_marker", func(t *testing.T) {
		dir := t.TempDir()
		c := newRootLossCache(t, "file://"+dir)
		if err := os.MkdirAll(filepath.Join(dir, "gcroots", "channels"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "gcroots", "channels", "v2"), []byte(c.root.StorePath+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("channels/v2", filepath.Join(dir, "gcroots", "current")); err != nil {
			t.Fatal(err)
		}
		c.requirePruned(t, kissPrune(t, c.storeURL))
	})

	// Entries under gcroots/ that cannot be read as a root: the prune
	// refuses (exit 4) and deletes nothing, the garbage included.
	for _, tc := range []struct {
		name   string
		make   func(t *testing.T, gcroots string)
		saying string
	}{
		{"dangling_link_not_a_store_path", func(t *testing.T, gcroots string) {
			if err := os.Symlink("/srv/markers/gone", filepath.Join(gcroots, "gone")); err != nil {
				t.Fatal(err)
			}
		}, "gcroots/gone"},
		{"link_to_a_directory", func(t *testing.T, gcroots string) {
			if err := os.Symlink(t.TempDir(), filepath.Join(gcroots, "a-dir")); err != nil {
				t.Fatal(err)
			}
		}, "gcroots/a-dir"},
		{"fifo", func(t *testing.T, gcroots string) {
			if err := syscall.Mkfifo(filepath.Join(gcroots, "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "gcroots/pipe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newRootLossCache(t, "file://"+dir)
			tc.make(t, filepath.Join(dir, "gcroots"))
			before := snapshotStore(t, c.st)
			c.requireRefused(t, before, kissPrune(t, c.storeURL), tc.saying)
			c.requireRefused(t, before, kissPrune(t, c.storeURL, "--dry-run"), tc.saying)
		})
	}
}

// TestEmptyMarkers (issue 11 item 2): a marker that names no store path
// (0 bytes, as `echo $p > marker` leaves on a full disk, or only bytes that
// are not UTF-8) stops the prune, on file:// and S3, unless
// --allow-empty-markers; `roots list` flags it.
func TestEmptyMarkers(t *testing.T) {
	for _, backend := range backends {
		for _, body := range []struct{ name, data string }{
			{"zero_bytes", ""},
			{"not_utf8", "\xff\xfe\x00\x81\n"},
		} {
			t.Run(backend+"/"+body.name, func(t *testing.T) {
				c := newRootLossCache(t, backendStore(t, backend))
				ctx := e2eCtx(t)
				// The root under test is named by a marker that lost its
				// content: nothing roots it any more, so a prune that
				// went ahead would delete it.
				if _, err := c.st.Put(ctx, "gcroots/root", strings.NewReader(body.data), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				waitStoreClockPast(t, c.st)
				before := snapshotStore(t, c.st)
				c.requireRefused(t, before, kissPrune(t, c.storeURL), "gcroots/root")
				c.requireRefused(t, before, kissPrune(t, c.storeURL, "--dry-run"), "gcroots/root")

				list := testenv.RunKiss(t, nil, "roots", "list", c.storeURL)
				if list.ExitCode != 0 {
					t.Errorf("roots list: exit %d", list.ExitCode)
				}
				var line string
				for _, l := range strings.Split(list.Stdout, "\n") {
					if strings.HasPrefix(l, "gcroots/root ") {
						line = l
					}
				}
				if !strings.Contains(line, "no store path") {
					t.Errorf("roots list does not flag the empty marker:\n%s", list.Stdout)
				}

				// The operator's override: the marker roots nothing, and
				// what only it rooted goes.
				res := kissPrune(t, c.storeURL, "--allow-empty-markers")
				if res.ExitCode != 0 {
					t.Fatalf("prune --allow-empty-markers: exit %d\n%s", res.ExitCode, res.Stderr)
				}
				if c.present(t, c.root) || !c.present(t, c.keep) {
					t.Errorf("--allow-empty-markers: root present %v (want false), control root present %v (want true)", c.present(t, c.root), c.present(t, c.keep))
				}
			})
		}
	}
}

// TestMarkerWritersRefuseHiddenNames (issue 11 item 3): every writer of
// markers refuses a name the pruner would never read as a marker (a
// segment starting with a dot), instead of writing a marker that roots
// nothing.
func TestMarkerWritersRefuseHiddenNames(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	for _, name := range []string{"team/.x", ".x", ".lock/job", "team/.hidden/y"} {
		res := testenv.RunKiss(t, nil, "with-lock", filepath.Join(dir, "gcroots", name), fakePath, "--", "true")
		if res.ExitCode != 2 {
			t.Errorf("with-lock gcroots/%s: exit %d, want 2 (usage)", name, res.ExitCode)
		}
		if _, err := st.Stat(e2eCtx(t), "gcroots/"+name); err == nil {
			t.Errorf("with-lock wrote gcroots/%s, which no prune reads", name)
		}
		res = testenv.RunKiss(t, nil, "roots", "add", dir, name, fakePath)
		if res.ExitCode != 2 {
			t.Errorf("roots add %s: exit %d, want 2 (usage)", name, res.ExitCode)
		}
	}
	// Control: a plain nested name is written by both.
	if res := testenv.RunKiss(t, nil, "with-lock", filepath.Join(dir, "gcroots", "team", "x"), fakePath, "--", "true"); res.ExitCode != 0 {
		t.Fatalf("with-lock gcroots/team/x: exit %d", res.ExitCode)
	}
	if got, _ := readMarker(t, st, "gcroots/team/x"); got != fakePath+"\n" {
		t.Fatalf("gcroots/team/x = %q", got)
	}
}
