package roots_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

var ctx = context.Background()

const (
	pathA = "/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a"
	pathB = "/nix/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-b"
)

func hashOf(t *testing.T, p string) nixcache.Hash {
	t.Helper()
	h, _, err := nixcache.ParseStorePath(p, "")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fileStore(t *testing.T) (storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "gcroots"), 0o755); err != nil {
		t.Fatal(err)
	}
	return st, dir
}

func load(t *testing.T, st storage.Store, opts roots.LoadOptions) ([]roots.Marker, error) {
	t.Helper()
	_, ms, err := roots.Load(ctx, st, opts)
	return ms, err
}

func bySource(ms []roots.Marker) map[string]roots.Marker {
	out := map[string]roots.Marker{}
	for _, m := range ms {
		out[m.Source] = m
	}
	return out
}

// TestSymlinkMarkers: the rules of package roots' doc for symlinks under
// gcroots/ on file://.
func TestSymlinkMarkers(t *testing.T) {
	st, dir := fileStore(t)
	gcroots := filepath.Join(dir, "gcroots")
	managed := filepath.Join(t.TempDir(), "host-00")
	if err := os.WriteFile(managed, []byte(pathB+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"nix-style":   pathA,              // need not exist on this host
		"below":       pathA + "/bin/x",   // a path below a store path
		"managed":     managed,            // a marker file kept elsewhere
		".lock/x":     "/does/not/matter", // under a dot segment: not a marker
		"team/.x":     "/does/not/matter",
		"relative":    "team/plain",
		"team/plain0": pathB,
	} {
		p := filepath.Join(gcroots, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(gcroots, "team", "plain"), []byte(pathA+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := load(t, st, roots.LoadOptions{Now: time.Now(), MaxAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	got := bySource(ms)
	for src, want := range map[string]string{
		"gcroots/nix-style": pathA, "gcroots/below": pathA, "gcroots/managed": pathB,
		"gcroots/relative": pathA, "gcroots/team/plain0": pathB,
	} {
		m, ok := got[src]
		if !ok {
			t.Errorf("%s: not read as a root (markers: %v)", src, ms)
			continue
		}
		if len(m.Paths) != 1 || m.Paths[0] != hashOf(t, want) || m.Link == "" || m.Problem != "" {
			t.Errorf("%s: %+v, want the root %s", src, m, want)
		}
		if m.Expired {
			t.Errorf("%s: a symlinked marker expired; it never does", src)
		}
	}
	for _, src := range []string{"gcroots/.lock/x", "gcroots/team/.x"} {
		if _, ok := got[src]; ok {
			t.Errorf("%s read as a marker", src)
		}
	}
	// Control: the regular marker behind "relative" is read (and expires).
	if m := got["gcroots/team/plain"]; !m.Expired {
		t.Errorf("gcroots/team/plain: %+v, want expired", m)
	}
}

// TestUnreadableEntriesStopLoad: anything under gcroots/ that cannot be
// read as a root is ErrUnavailable, naming the entry.
func TestUnreadableEntriesStopLoad(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T, p string){
		"dangling": func(t *testing.T, p string) { must(t, os.Symlink("/srv/nowhere", p)) },
		"to-dir":   func(t *testing.T, p string) { must(t, os.Symlink(t.TempDir(), p)) },
		"fifo":     func(t *testing.T, p string) { must(t, syscall.Mkfifo(p, 0o644)) },
		"to-fifo": func(t *testing.T, p string) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			must(t, syscall.Mkfifo(fifo, 0o644))
			must(t, os.Symlink(fifo, p))
		},
		"to-huge-file": func(t *testing.T, p string) {
			big := filepath.Join(t.TempDir(), "big")
			must(t, os.WriteFile(big, []byte(strings.Repeat(pathA+"\n", nixcache.MaxMarkerSize/len(pathA)+1)), 0o644))
			must(t, os.Symlink(big, p))
		},
		"to-other-store-dir": func(t *testing.T, p string) { must(t, os.Symlink("/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a", p)) },
	} {
		t.Run(name, func(t *testing.T) {
			st, dir := fileStore(t)
			must(t, os.WriteFile(filepath.Join(dir, "gcroots", "ok"), []byte(pathA+"\n"), 0o644))
			mk(t, filepath.Join(dir, "gcroots", "entry"))
			done := make(chan error, 1)
			go func() { _, err := load(t, st, roots.LoadOptions{}); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, roots.ErrUnavailable) || !strings.Contains(err.Error(), "gcroots/entry") {
					t.Fatalf("Load: %v, want ErrUnavailable naming gcroots/entry", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Load hangs on the entry")
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestEmptyMarkersFlagged: a marker that names no store path is returned
// with its Problem set, from the store, through a symlink and from a local
// directory alike.
func TestEmptyMarkersFlagged(t *testing.T) {
	st, dir := fileStore(t)
	local := t.TempDir()
	empty := filepath.Join(t.TempDir(), "empty")
	must(t, os.WriteFile(empty, nil, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "gcroots", "zero"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "gcroots", "binary"), []byte("\xff\xfe\x00\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "gcroots", "comments"), []byte("# nothing\n\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "gcroots", "good"), []byte(pathA+"\n"), 0o644))
	must(t, os.Symlink(empty, filepath.Join(dir, "gcroots", "link")))
	must(t, os.WriteFile(filepath.Join(local, "zero"), nil, 0o644))
	ms, err := load(t, st, roots.LoadOptions{Sources: []string{local}})
	if err != nil {
		t.Fatal(err)
	}
	got := bySource(ms)
	for _, src := range []string{"gcroots/zero", "gcroots/binary", "gcroots/comments", "gcroots/link", filepath.Join(local, "zero")} {
		if m, ok := got[src]; !ok || m.Problem != roots.NoStorePath || len(m.Paths) != 0 {
			t.Errorf("%s: %+v (present %v), want flagged %q", src, m, ok, roots.NoStorePath)
		}
	}
	if m := got["gcroots/good"]; m.Problem != "" || len(m.Paths) != 1 {
		t.Errorf("control gcroots/good: %+v", m)
	}
}

// TestLocalDirectorySymlinks: a --roots directory follows the same rules
// as gcroots/ (it used to skip symlinks without a word).
func TestLocalDirectorySymlinks(t *testing.T) {
	st, dir := fileStore(t)
	must(t, os.WriteFile(filepath.Join(dir, "gcroots", "ok"), []byte(pathA+"\n"), 0o644))
	local := t.TempDir()
	must(t, os.Symlink(pathB, filepath.Join(local, "result")))
	ms, err := load(t, st, roots.LoadOptions{Sources: []string{local}})
	if err != nil {
		t.Fatal(err)
	}
	if m := bySource(ms)[filepath.Join(local, "result")]; len(m.Paths) != 1 || m.Paths[0] != hashOf(t, pathB) || !m.Local {
		t.Fatalf("result link: %+v", m)
	}
	must(t, os.Symlink("/nowhere", filepath.Join(local, "broken")))
	if _, err := load(t, st, roots.LoadOptions{Sources: []string{local}}); !errors.Is(err, roots.ErrUnavailable) {
		t.Fatalf("broken link in a --roots directory: %v", err)
	}
}

// TestRootsIsAFile: gcroots being a regular file is a clear error, not "no
// roots".
func TestRootsIsAFile(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "gcroots"), []byte(pathA+"\n"), 0o644))
	_, err = load(t, st, roots.LoadOptions{})
	if !errors.Is(err, roots.ErrUnavailable) || !strings.Contains(err.Error(), "gcroots") || !strings.Contains(err.Error(), "is a file") {
		t.Fatalf("Load: %v", err)
	}
}

// TestWritersRefuseWhatThePrunerSkips: Put, the one writer of markers,
// refuses every name the pruner would not read and every body that would
// root nothing; what it accepts, Load reads back as the same root.
func TestWritersRefuseWhatThePrunerSkips(t *testing.T) {
	st := storage.OpenMem(t.Name())
	for _, name := range []string{"", ".x", "team/.x", ".lock/job", "a//b", "a/../b", "a/", "gcroots/", "x y"} {
		if _, err := roots.Key(name); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Key(%q): %v, want ErrInvalidKey", name, err)
		}
		if _, err := roots.Add(ctx, st, name, []string{pathA}, ""); err == nil {
			t.Errorf("Add(%q) accepted", name)
		}
	}
	for _, body := range []string{"", "\n", "# only a comment\n", "\xff\xfe", pathA + "\nrm -rf /\n", "/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a\n", strings.Repeat(pathA+"\n", nixcache.MaxMarkerSize/len(pathA)+1)} {
		if _, err := roots.Put(ctx, st, "gcroots/x", []byte(body), "", storage.PutOptions{}); !errors.Is(err, nixcache.ErrInvalidMarker) {
			t.Errorf("Put(%.40q): %v, want ErrInvalidMarker", body, err)
		}
	}
	if _, err := roots.Add(ctx, st, "a", []string{"not-a-store-path"}, ""); err == nil {
		t.Error("Add accepted a non store path")
	}
	for o, err := range st.List(ctx, "") {
		t.Fatalf("a refused write left %s (%v)", o.Key, err)
	}
	if _, err := roots.Put(ctx, st, "gcroots/ci/main", []byte("# ci\n"+pathA+"\n\n"+pathB+"\n"), "", storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := roots.Add(ctx, st, "gcroots/web1", []string{pathB}, ""); err != nil {
		t.Fatal(err)
	}
	ms, err := load(t, st, roots.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := bySource(ms)
	if m := got["gcroots/ci/main"]; len(m.Paths) != 2 || m.Paths[1] != hashOf(t, pathB) {
		t.Errorf("ci/main read back as %+v", m)
	}
	if m := got["gcroots/web1"]; len(m.Paths) != 1 || m.Paths[0] != hashOf(t, pathB) {
		t.Errorf("web1 read back as %+v", m)
	}
	o, err := st.Stat(ctx, "gcroots/web1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Get(ctx, o.Key)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// FuzzMarkerWriterReader: whatever Put accepts, Load reads as a marker
// naming at least one store path (the writer's and the reader's rules
// cannot drift apart).
func FuzzMarkerWriterReader(f *testing.F) {
	f.Add("web1", pathA+"\n")
	f.Add("team/.x", pathA+"\n")
	f.Add("a", "# c\n"+pathA)
	f.Add("b", "\xff")
	f.Fuzz(func(t *testing.T, name, body string) {
		st := storage.NewMem(time.Now)
		key, err := roots.Key(name)
		if err != nil {
			return
		}
		if _, err := roots.Put(ctx, st, key, []byte(body), "", storage.PutOptions{}); err != nil {
			return
		}
		ms, err := load(t, st, roots.LoadOptions{})
		if err != nil {
			t.Fatalf("Put accepted %q at %s, Load fails: %v", body, key, err)
		}
		if len(ms) != 1 || ms[0].Source != key || len(ms[0].Paths) == 0 || ms[0].Problem != "" {
			t.Fatalf("Put accepted %q at %s, Load read %+v", body, key, ms)
		}
	})
}
