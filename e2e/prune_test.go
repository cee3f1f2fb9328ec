package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// kissRootsAdd registers paths under gcroots/<name> with `kiss roots add`.
func kissRootsAdd(t testing.TB, storeURL, name string, paths ...string) {
	t.Helper()
	res := testenv.RunKiss(t, nil, append([]string{"roots", "add", storeURL, name}, paths...)...)
	if res.ExitCode != 0 {
		t.Fatalf("kiss roots add %s: exit %d: %s", name, res.ExitCode, res.Stderr)
	}
}

// kissPrune runs `kiss prune --grace 0s [extra flags] STORE`. The objects
// are seconds old, so the grace period has to be 0 for anything to be
// deleted at all. (Flags go before STORE: urfave/cli stops parsing flags
// at the first argument.)
func kissPrune(t testing.TB, storeURL string, extra ...string) testenv.KissResult {
	t.Helper()
	args := append([]string{"prune", "--grace", "0s"}, extra...)
	return testenv.RunKiss(t, nil, append(args, storeURL)...)
}

// narinfoURL returns the URL: field of a narinfo (the NAR's key).
func narinfoURL(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "URL: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no URL: line", path)
	return ""
}

// expectedAfterPrune computes, independently of kiss, which keys of the
// cache a correct prune keeps: the closures of roots as Nix itself reports
// them (`nix path-info -r`), plus every kept output's deriver and that
// .drv's closure (`nix-store -qR`) when the cache holds the .drv; for each
// kept path its narinfo, .ls and the NAR its URL names; for each kept .drv
// its build log; and nix-cache-info and gcroots/ always.
func expectedAfterPrune(t testing.TB, c *nixCache, before snapshot, roots ...string) (keep map[string]bool, keptPaths []string) {
	t.Helper()
	n := c.Nix
	closure, err := n.Closure("", roots...)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, p := range closure {
		paths[p] = true
	}
	for _, p := range closure {
		if strings.HasSuffix(p, ".drv") {
			continue
		}
		d := n.Deriver(p)
		if _, ok := before[testenv.StoreHash(d)+".narinfo"]; !ok {
			continue
		}
		for _, q := range strings.Fields(n.MustRun("nix-store", "-qR", d)) {
			paths[q] = true
		}
	}
	keep = map[string]bool{}
	for k := range before {
		if k == "nix-cache-info" || strings.HasPrefix(k, "gcroots/") {
			keep[k] = true
		}
	}
	for p := range paths {
		keptPaths = append(keptPaths, p)
		h := testenv.StoreHash(p)
		ni := h + ".narinfo"
		if _, ok := before[ni]; !ok {
			t.Fatalf("fixture: %s is reachable but not in the cache", p)
		}
		keep[ni] = true
		keep[narinfoURL(t, filepath.Join(c.Dir, ni))] = true
		if _, ok := before[h+".ls"]; ok {
			keep[h+".ls"] = true
		}
		if log := "log/" + filepath.Base(p); strings.HasSuffix(p, ".drv") {
			if _, ok := before[log]; ok {
				keep[log] = true
			}
		}
	}
	sort.Strings(keptPaths)
	return keep, keptPaths
}

// objectsOfPath lists the keys that belong to a store path in before: its
// narinfo, .ls, NAR and (for a .drv) log.
func objectsOfPath(t testing.TB, c *nixCache, before snapshot, p string) []string {
	h := testenv.StoreHash(p)
	var keys []string
	for _, k := range []string{h + ".narinfo", h + ".ls", "log/" + filepath.Base(p)} {
		if _, ok := before[k]; ok {
			keys = append(keys, k)
		}
	}
	if _, ok := before[h+".narinfo"]; ok {
		keys = append(keys, narinfoURL(t, filepath.Join(c.Dir, h+".narinfo")))
	}
	return keys
}

// restrict returns the part of s whose keys are in keep.
func restrict(s snapshot, keep map[string]bool) snapshot {
	r := snapshot{}
	for k, v := range s {
		if keep[k] {
			r[k] = v
		}
	}
	return r
}

// copyDir copies a cache directory (cp -a keeps it byte-identical and
// fast), so every fail-closed case starts from the same pushed cache.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "cache")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	return dst
}

// TestPruneRealNix (issue 4): a DAG of real derivations pushed by Nix with
// derivers, logs and listings; two roots registered with `kiss roots
// add`; `kiss prune` keeps exactly the rooted closures (with derivers and
// logs), byte for byte, deletes every object of every unrooted path
// except a NAR shared with a kept path, and a fresh store can substitute
// every root's closure from the result with signatures checked. The same
// cache pruned inside an S3 bucket keeps the same set, byte for byte.
func TestPruneRealNix(t *testing.T) {
	n := testenv.Nix(t)
	c := buildAndPush(t, n, dagExpr)

	// The fixture must really have a NAR shared by a kept and a garbage path.
	sharedNAR := narinfoURL(t, filepath.Join(c.Dir, testenv.StoreHash(c.Out["dupKept"])+".narinfo"))
	if got := narinfoURL(t, filepath.Join(c.Dir, testenv.StoreHash(c.Out["dupGarbage"])+".narinfo")); got != sharedNAR {
		t.Fatalf("fixture: dup outputs have different NARs %s / %s", sharedNAR, got)
	}

	// A copy for S3 taken before any marker exists, so both stores get
	// their markers from `kiss roots add` itself.
	preRoots := copyDir(t, c.Dir)

	kissRootsAdd(t, c.URL(), "app", c.Out["app"])
	kissRootsAdd(t, c.URL(), "tool", c.Out["tool"])
	before := snapshotDir(t, c.Dir)
	for _, m := range []string{"gcroots/app", "gcroots/tool"} {
		if _, ok := before[m]; !ok {
			t.Fatalf("kiss roots add left no %s; have %v", m, before.keys())
		}
	}

	rootPaths := []string{c.Out["app"], c.Out["tool"]}
	keep, keptPaths := expectedAfterPrune(t, c, before, rootPaths...)
	want := restrict(before, keep)
	if len(want) == len(before) {
		t.Fatal("fixture: nothing to prune")
	}
	t.Logf("%d objects before, expecting %d kept (%d store paths)", len(before), len(want), len(keptPaths))

	// A dry run deletes nothing.
	if res := kissPrune(t, c.URL(), "--dry-run", "--list"); res.ExitCode != 0 {
		t.Fatalf("dry run: exit %d", res.ExitCode)
	}
	if d := diffSnapshots(before, snapshotDir(t, c.Dir), "before", "after-dry-run"); len(d) > 0 {
		t.Fatalf("dry run changed the cache:\n%s", strings.Join(d, "\n"))
	}

	garbageKeys := map[string]string{} // key → what it belongs to
	for _, a := range []string{"garbage", "garbageDep", "dupGarbage"} {
		for _, p := range []string{c.Out[a], c.Drv[a]} {
			for _, k := range objectsOfPath(t, c, before, p) {
				if k != sharedNAR {
					garbageKeys[k] = p
				}
			}
		}
	}
	if len(garbageKeys) < 12 {
		t.Fatalf("fixture: only %d garbage objects: %v", len(garbageKeys), garbageKeys)
	}

	if res := kissPrune(t, c.URL()); res.ExitCode != 0 {
		t.Fatalf("kiss prune: exit %d", res.ExitCode)
	}
	after := snapshotDir(t, c.Dir)
	if d := diffSnapshots(want, after, "expected", "pruned"); len(d) > 0 {
		t.Fatalf("pruned cache is not exactly the rooted closures:\n%s", strings.Join(d, "\n"))
	}
	if _, ok := after[sharedNAR]; !ok {
		t.Errorf("NAR %s shared with a kept path was deleted", sharedNAR)
	}
	// Spell the garbage out, so the test says what it proves.
	for k, p := range garbageKeys {
		if _, ok := after[k]; ok {
			t.Errorf("unrooted %s survived: %s", p, k)
		}
	}

	// Prune is idempotent: a second run deletes nothing.
	if res := kissPrune(t, c.URL()); res.ExitCode != 0 {
		t.Fatalf("second prune: exit %d", res.ExitCode)
	}
	if d := diffSnapshots(after, snapshotDir(t, c.Dir), "after-1", "after-2"); len(d) > 0 {
		t.Errorf("second prune changed the cache:\n%s", strings.Join(d, "\n"))
	}

	// A fresh store substitutes every root's closure, signatures checked.
	for _, r := range rootPaths {
		store := n.NewStore()
		if err := n.SubstituteFrom(c.URL(), store, c.PublicKey, r); err != nil {
			t.Fatalf("substitute root %s from the pruned cache: %v", r, err)
		}
		got, err := n.Closure(store, r)
		if err != nil {
			t.Fatal(err)
		}
		wantClosure, _ := n.Closure("", r)
		if strings.Join(got, " ") != strings.Join(wantClosure, " ") {
			t.Errorf("substituted closure of %s: %v, want %v", r, got, wantClosure)
		}
	}
	// …and the garbage is really gone for Nix too.
	if err := n.SubstituteFrom(c.URL(), n.NewStore(), c.PublicKey, c.Out["garbage"]); err == nil {
		t.Error("an unrooted path can still be substituted after prune")
	}

	// The same cache in an S3 bucket, pruned there, keeps the same set.
	// (Markers are compared by key only: their bodies may carry metadata
	// such as a creation time.)
	s3URL := testenv.Versitygw(t)
	s3 := openStore(t, s3URL)
	copyStore(t, openStore(t, "file://"+preRoots), s3)
	kissRootsAdd(t, s3URL, "app", c.Out["app"])
	kissRootsAdd(t, s3URL, "tool", c.Out["tool"])
	waitStoreClockPast(t, s3)
	if res := kissPrune(t, s3URL); res.ExitCode != 0 {
		t.Fatalf("kiss prune on S3: exit %d", res.ExitCode)
	}
	s3After := snapshotStore(t, s3)
	for k := range after {
		if strings.HasPrefix(k, "gcroots/") {
			if _, ok := s3After[k]; !ok {
				t.Errorf("marker %s missing in S3", k)
			}
			delete(s3After, k)
			delete(after, k)
		}
	}
	if d := diffSnapshots(after, s3After, "file-pruned", "s3-pruned"); len(d) > 0 {
		t.Fatalf("S3 prune kept a different set than file:// prune:\n%s", strings.Join(d, "\n"))
	}
	t.Logf("S3 prune kept the same %d objects as the file:// prune", len(s3After))
}

// exitRefused is cmd/kiss's ExitRefused: fail-closed, nothing deleted.
const exitRefused = 4

// TestPruneFailsClosed: one damaged cache per fail-closed rule, each a
// copy of one Nix-pushed cache with two roots. Every damage is in a
// reachable position (or in the root set itself); `kiss prune --grace 0s`
// must exit with ExitRefused and delete nothing — not even the garbage it
// could have proven unreachable.
func TestPruneFailsClosed(t *testing.T) {
	n := testenv.Nix(t)
	c := buildAndPush(t, n, dagExpr)
	kissRootsAdd(t, c.URL(), "app", c.Out["app"])
	kissRootsAdd(t, c.URL(), "tool", c.Out["tool"])
	ni := func(attr string) string { return testenv.StoreHash(c.Out[attr]) + ".narinfo" }
	write := func(dir, key string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, key)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, key), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(dir, key string) {
		t.Helper()
		if err := os.Remove(filepath.Join(dir, key)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(dir, key string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name   string
		damage func(dir string)
		flags  []string
	}{
		{"unparsable reachable narinfo", func(dir string) {
			write(dir, ni("util"), []byte("this is not a narinfo\n\x00\xff\n"))
		}, nil},
		{"empty reachable narinfo", func(dir string) {
			write(dir, ni("lib"), nil)
		}, nil},
		{"reachable narinfo describes another path", func(dir string) {
			write(dir, ni("util"), read(dir, ni("lib")))
		}, nil},
		{"reachable NAR missing", func(dir string) {
			remove(dir, narinfoURL(t, filepath.Join(dir, ni("lib"))))
		}, nil},
		{"referenced narinfo missing", func(dir string) {
			remove(dir, ni("data")) // tool references data
		}, nil},
		{"oversized marker", func(dir string) {
			// One byte over nixcache.MaxMarkerSize (64 MiB): unreadable as a marker.
			big := make([]byte, 64<<20+1)
			for i := range big {
				big[i] = '\n'
			}
			copy(big, c.Out["garbage"]+"\n")
			write(dir, "gcroots/huge", big)
		}, nil},
		{"no roots at all", func(dir string) {
			remove(dir, "gcroots/app")
			remove(dir, "gcroots/tool")
		}, nil},
		{"extra root directory missing", func(dir string) {}, []string{"--roots", "/nonexistent/kiss-e2e-roots"}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, c.Dir)
			tc.damage(dir)
			before := snapshotDir(t, dir)
			res := kissPrune(t, "file://"+dir, tc.flags...)
			if res.ExitCode != exitRefused {
				t.Errorf("exit %d, want %d (refused)", res.ExitCode, exitRefused)
			}
			if d := diffSnapshots(before, snapshotDir(t, dir), "before", "after"); len(d) > 0 {
				t.Errorf("a refused prune changed the cache:\n%s", strings.Join(d, "\n"))
			}
		})
	}
	// The same refusal inside an S3 bucket: a damaged copy of the cache in
	// versitygw, pruned there, is left unchanged.
	t.Run("S3_unparsable_reachable_narinfo", func(t *testing.T) {
		dir := copyDir(t, c.Dir)
		write(dir, ni("util"), []byte("not a narinfo\n"))
		s3URL := testenv.Versitygw(t)
		s3 := openStore(t, s3URL)
		copyStore(t, openStore(t, "file://"+dir), s3)
		before := snapshotStore(t, s3)
		waitStoreClockPast(t, s3) // so a prune that ignored the damage would delete
		if res := kissPrune(t, s3URL); res.ExitCode != exitRefused {
			t.Errorf("exit %d, want %d (refused)", res.ExitCode, exitRefused)
		}
		if d := diffSnapshots(before, snapshotStore(t, s3), "before", "after"); len(d) > 0 {
			t.Errorf("a refused prune changed the bucket:\n%s", strings.Join(d, "\n"))
		}
	})

	// Not a refusal, by design (DESIGN.md I4 lists what stops deletion): a
	// marker naming a path that is not in the cache roots nothing and is
	// reported, so one stale marker cannot block pruning forever. The other
	// root's closure must still be complete.
	t.Run("marker_names_absent_path", func(t *testing.T) {
		dir := copyDir(t, c.Dir)
		remove(dir, ni("app"))
		res := kissPrune(t, "file://"+dir)
		if res.ExitCode != 0 {
			t.Fatalf("exit %d", res.ExitCode)
		}
		if h := testenv.StoreHash(c.Out["app"]); !strings.Contains(res.Stdout+res.Stderr, h) {
			t.Errorf("no warning naming the absent rooted path %s", h)
		}
		if !strings.Contains(res.Stdout+res.Stderr, "marker gcroots/") {
			t.Errorf("the warning does not say which marker names the absent path:\n%s", res.Stderr)
		}
		after := snapshotDir(t, dir)
		closure, err := n.Closure("", c.Out["tool"])
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range closure {
			if _, ok := after[testenv.StoreHash(p)+".narinfo"]; !ok {
				t.Errorf("%s (rooted by gcroots/tool) was deleted", p)
			}
		}
	})

	// Control: the undamaged cache does prune, so the refusals above are
	// caused by the damage and not by something else in the setup.
	dir := copyDir(t, c.Dir)
	before := snapshotDir(t, dir)
	if res := kissPrune(t, "file://"+dir); res.ExitCode != 0 {
		t.Fatalf("control prune: exit %d", res.ExitCode)
	}
	if after := snapshotDir(t, dir); len(after) >= len(before) {
		t.Errorf("control prune deleted nothing (%d → %d objects)", len(before), len(after))
	}
}

// TestPruneNginxMTLSDeployment: the original kiss-cache deployment end to
// end. nginx serves the cache directory over HTTPS with required client
// certificates; Nix 2.8 (which cannot present one) pushes through a
// loopback sidecar holding the writer's certificate, so the files are
// written by nginx's WebDAV PUT; a reader's PUT is refused; `kiss prune`
// runs on the directory; a fresh store substitutes the root through the
// reader's sidecar with signatures checked, and the garbage is gone.
func TestPruneNginxMTLSDeployment(t *testing.T) {
	n := testenv.Nix(t)
	pki := testenv.PKI(t)
	dir := t.TempDir()
	_, _, side := testenv.NginxMTLS(t, pki, dir, []string{"writer"}, []string{"writer", "reader"})

	out := n.BuildAttrs(`rec {
  dep = mk "e2e-web-dep" "echo building dep; echo dep-${nonce} > $out";
  app = mk "e2e-web-app" "echo building app; mkdir $out; echo ${dep} > $out/uses";
  junk = mk "e2e-web-junk" "echo building junk; echo junk-${nonce} > $out";
}`)
	sk, pk := n.GenerateKey("kiss-e2e-web-" + n.Nonce[:6])
	opts := "?compression=zstd&write-nar-listing=true&secret-key=" + sk
	if err := n.CopyTo(side["writer"]+opts, out["app"]); err != nil {
		t.Fatalf("push through the writer's sidecar: %v", err)
	}
	// The cache exists now (nix-cache-info written), so the reader's push
	// gets as far as uploading, and must be refused there.
	err := n.CopyTo(side["reader"]+opts, out["junk"])
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("push through the reader's certificate: %v, want HTTP 403", err)
	}
	if _, err := os.Stat(filepath.Join(dir, testenv.StoreHash(out["junk"])+".narinfo")); err == nil {
		t.Fatal("the reader's refused push left a narinfo")
	}
	if err := n.CopyTo(side["writer"]+opts, out["junk"]); err != nil {
		t.Fatalf("push through the writer's sidecar: %v", err)
	}
	for _, p := range []string{out["app"], out["dep"], out["junk"]} {
		if _, err := os.Stat(filepath.Join(dir, testenv.StoreHash(p)+".narinfo")); err != nil {
			t.Fatalf("push did not land: %v", err)
		}
	}
	kissRootsAdd(t, "file://"+dir, "app", out["app"])
	if res := kissPrune(t, "file://"+dir); res.ExitCode != 0 {
		t.Fatalf("kiss prune: exit %d", res.ExitCode)
	}
	if _, err := os.Stat(filepath.Join(dir, testenv.StoreHash(out["junk"])+".narinfo")); err == nil {
		t.Error("unrooted junk survived the prune")
	}
	store := n.NewStore()
	if err := n.SubstituteFrom(side["reader"], store, pk, out["app"]); err != nil {
		t.Fatalf("substitute through the reader's sidecar: %v", err)
	}
	got, err := n.Closure(store, out["app"])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("substituted closure %v, want app and dep", got)
	}
	if err := n.SubstituteFrom(side["reader"], n.NewStore(), pk, out["junk"]); err == nil {
		t.Error("the pruned junk can still be substituted")
	}
}
