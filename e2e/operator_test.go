package e2e

import (
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// operatorExpr is a DAG with unique shortest chains, pushed without .drv
// files so Nix's own closures (nix path-info -r) are exactly the pruner's:
//
//	web → app → util → lib          ops → tool → lib
//	      app → mid1 → mid2 → lib   garbage → util (unrooted)
const operatorExpr = `rec {
  lib = mk "op-lib" "mkdir $out; i=0; while [ $i -lt 400 ]; do echo lib line $i ${nonce}; i=$((i+1)); done > $out/big";
  util = mk "op-util" "mkdir $out; echo ${lib} > $out/uses";
  mid2 = mk "op-mid2" "mkdir $out; echo ${lib} mid2 > $out/uses";
  mid1 = mk "op-mid1" "mkdir $out; echo ${mid2} > $out/uses";
  app = mk "op-app" "mkdir $out; echo ${util} ${mid1} > $out/uses";
  tool = mk "op-tool" "mkdir $out; echo ${lib} tool > $out/uses";
  garbage = mk "op-garbage" "mkdir $out; echo ${util} garbage > $out/uses";
}`

// pathInfo is what `nix path-info --json -rS` says of one path.
type pathInfo struct {
	Path                string `json:"path"`
	DownloadSize        uint64 `json:"downloadSize"`
	ClosureDownloadSize uint64 `json:"closureDownloadSize"`
}

func nixPathInfo(t *testing.T, n *testenv.NixEnv, store string, paths ...string) map[string]pathInfo {
	t.Helper()
	out := n.MustRun("nix", append([]string{"path-info", "--json", "-rS", "--store", store}, paths...)...)
	var infos []pathInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("nix path-info --json: %v\n%s", err, out)
	}
	m := map[string]pathInfo{}
	for _, i := range infos {
		m[i.Path] = i
	}
	return m
}

var storePathRE = regexp.MustCompile(`/nix/store/[0-9a-z]{32}-[^\s\x1b]+`)

// nixWhyDepends is the chain `nix why-depends FROM TO` prints (Nix's own
// shortest path through references).
func nixWhyDepends(t *testing.T, n *testenv.NixEnv, store, from, to string) []string {
	t.Helper()
	out := n.MustRun("nix", "why-depends", "--store", store, from, to)
	return storePathRE.FindAllString(out, -1)
}

type whyAnswer struct {
	Path   string `json:"path"`
	Kept   bool   `json:"kept"`
	Marker string `json:"marker"`
	Chain  []struct {
		Path string `json:"path"`
		Via  string `json:"via"`
	} `json:"chain"`
	DeletableAt string `json:"deletable_at"`
}

type duRow struct {
	Root    string `json:"root"`
	Closure struct {
		Paths int    `json:"paths"`
		Bytes uint64 `json:"bytes"`
	} `json:"closure"`
	Unique struct {
		Paths int    `json:"paths"`
		Bytes uint64 `json:"bytes"`
	} `json:"unique"`
}

func kissJSON(t *testing.T, v any, wantExit int, args ...string) testenv.KissResult {
	t.Helper()
	res := testenv.RunKiss(t, nil, args...)
	if res.ExitCode != wantExit {
		t.Fatalf("kiss %s: exit %d, want %d\n%s", strings.Join(args, " "), res.ExitCode, wantExit, res.Stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(res.Stdout), v); err != nil {
			t.Fatalf("kiss %s: %v\n%s", strings.Join(args, " "), err, res.Stdout)
		}
	}
	return res
}

// TestOperatorCommands: kiss why, du, verify and rm on a cache written by
// the real nix copy, on file:// and in a versitygw bucket, checked against
// Nix's own answers (nix path-info -rS, nix why-depends).
func TestOperatorCommands(t *testing.T) {
	n := testenv.Nix(t)
	out := n.BuildAttrs(operatorExpr)
	dir := t.TempDir()
	secret, public := n.GenerateKey("kiss-op-" + n.Nonce[:6])
	fileURL := "file://" + dir
	var all []string
	for _, p := range out {
		all = append(all, p)
	}
	sort.Strings(all)
	if err := n.CopyTo(fileURL+"?compression=zstd&write-nar-listing=true&secret-key="+secret, all...); err != nil {
		t.Fatal(err)
	}
	kissRootsAdd(t, fileURL, "web", out["app"])
	kissRootsAdd(t, fileURL, "ops", out["tool"])

	// Nix's answers, from the file:// cache.
	info := nixPathInfo(t, n, fileURL, out["app"], out["tool"])
	closure := func(root string) map[string]bool {
		m := map[string]bool{}
		for _, p := range strings.Fields(n.MustRun("nix", "path-info", "-r", "--store", fileURL, root)) {
			m[p] = true
		}
		return m
	}
	webC, opsC := closure(out["app"]), closure(out["tool"])
	unique := func(mine, other map[string]bool) (int, uint64) {
		var paths int
		var bytes uint64
		for p := range mine {
			if !other[p] {
				paths++
				bytes += info[p].DownloadSize
			}
		}
		return paths, bytes
	}

	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			var url string
			if backend == "s3" {
				url = backendStore(t, "s3")
				copyStore(t, openStore(t, fileURL), openStore(t, url))
				waitStoreClockPast(t, openStore(t, url))
			} else {
				// Work on a copy: the s3 run copies the original.
				url = "file://" + copyDir(t, dir)
			}

			var du struct {
				Roots  []duRow `json:"roots"`
				Unkept int     `json:"unkept_paths"`
			}
			kissJSON(t, &du, 0, "du", "--json", "--grace", "0s", url)
			rows := map[string]duRow{}
			for _, r := range du.Roots {
				rows[r.Root] = r
			}
			for _, c := range []struct {
				marker, root string
				mine, other  map[string]bool
			}{{"gcroots/web", out["app"], webC, opsC}, {"gcroots/ops", out["tool"], opsC, webC}} {
				r := rows[c.marker]
				up, ub := unique(c.mine, c.other)
				if r.Closure.Paths != len(c.mine) || r.Closure.Bytes != info[c.root].ClosureDownloadSize || r.Unique.Paths != up || r.Unique.Bytes != ub {
					t.Errorf("du %s: %+v; nix: closure %d paths %d bytes, unique %d paths %d bytes",
						c.marker, r, len(c.mine), info[c.root].ClosureDownloadSize, up, ub)
				}
			}
			if du.Unkept != 1 || len(du.Roots) != 2 {
				t.Errorf("du: %d rows, %d unkept; want 2 rows and the garbage path unkept", len(du.Roots), du.Unkept)
			}

			var why []whyAnswer
			kissJSON(t, &why, 0, "why", "--json", "--grace", "0s", url, out["lib"], out["mid2"], out["garbage"])
			for i, c := range []struct{ marker, root, target string }{
				{"gcroots/ops", out["tool"], out["lib"]},
				{"gcroots/web", out["app"], out["mid2"]},
			} {
				var got []string
				for _, l := range why[i].Chain {
					got = append(got, l.Path)
				}
				want := nixWhyDepends(t, n, fileURL, c.root, c.target)
				if !why[i].Kept || why[i].Marker != c.marker || !slices.Equal(got, want) {
					t.Errorf("why %s: kept %v by %s via %v; nix why-depends from %s: %v", c.target, why[i].Kept, why[i].Marker, got, c.marker, want)
				}
			}
			if why[2].Kept || why[2].DeletableAt == "" {
				t.Errorf("why garbage: %+v, want not kept, with when it goes", why[2])
			}

			// rm refuses a rooted path, naming its root, and deletes an
			// unrooted one (narinfo, .ls, NAR).
			res := testenv.RunKiss(t, nil, "rm", "--grace", "0s", url, out["lib"])
			if res.ExitCode != 4 || !strings.Contains(res.Stderr, "gcroots/ops") {
				t.Errorf("rm of a rooted path: exit %d, stderr %q; want 4 naming gcroots/ops", res.ExitCode, res.Stderr)
			}
			st := openStore(t, url)
			before := snapshotStore(t, st)
			garbageKey := testenv.StoreHash(out["garbage"]) + ".narinfo"
			if _, ok := before[garbageKey]; !ok {
				t.Fatalf("%s not in the cache", garbageKey)
			}
			garbageNAR := narKeyOf(t, st, garbageKey)
			kissJSON(t, nil, 0, "rm", "--grace", "0s", url, out["garbage"])
			after := snapshotStore(t, st)
			var gone []string
			for k := range before {
				if _, ok := after[k]; !ok {
					gone = append(gone, k)
				}
			}
			sort.Strings(gone)
			want := []string{garbageKey, testenv.StoreHash(out["garbage"]) + ".ls", garbageNAR}
			sort.Strings(want)
			if !slices.Equal(gone, want) || len(after) != len(before)-3 {
				t.Errorf("rm garbage deleted %v, want %v", gone, want)
			}

			// verify: clean, then a NAR goes missing; --quarantine moves its
			// narinfo aside, after which the cache verifies clean again.
			kissJSON(t, nil, 0, "verify", "--deep", "--trusted-key", public, url)
			utilNAR := narKeyOf(t, st, testenv.StoreHash(out["util"])+".narinfo")
			if err := st.Delete(e2eCtx(t), utilNAR, storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			var vr struct {
				Counts      map[string]int `json:"counts"`
				Quarantined []string       `json:"quarantined"`
			}
			kissJSON(t, &vr, 8, "verify", "--json", url)
			if vr.Counts["missing-nar"] != 1 {
				t.Errorf("verify counts %v, want one missing-nar", vr.Counts)
			}
			kissJSON(t, &vr, 8, "verify", "--json", "--quarantine", url)
			if len(vr.Quarantined) != 1 {
				t.Errorf("quarantined %v, want util's narinfo", vr.Quarantined)
			}
			// why and du answer on the damaged cache too: the quarantined path
			// is absent (exit 1), the rest is explained as before.
			if res := testenv.RunKiss(t, nil, "why", "--grace", "0s", url, out["util"]); res.ExitCode != 1 || !strings.Contains(res.Stderr, "not in the cache") {
				t.Errorf("why of a quarantined path: exit %d %q, want 1, not in the cache", res.ExitCode, res.Stderr)
			}
			kissJSON(t, &du, 0, "du", "--json", "--grace", "0s", url)
			kissJSON(t, &why, 0, "why", "--json", "--grace", "0s", url, out["lib"])
			if !why[0].Kept || why[0].Marker != "gcroots/ops" {
				t.Errorf("why lib on the damaged cache: %+v", why[0])
			}
			vr.Counts = nil
			kissJSON(t, &vr, 8, "verify", "--json", url)
			if vr.Counts["missing-nar"] != 0 || vr.Counts["dangling-reference"] != 1 {
				t.Errorf("after quarantine: %v, want only app's reference to the quarantined util dangling", vr.Counts)
			}
			var restore struct {
				Restored []string `json:"restored"`
				Kept     []struct {
					Key    string `json:"key"`
					Reason string `json:"reason"`
				} `json:"kept_in_quarantine"`
			}
			if backend == "file" {
				// The repair a quarantine allows: the path is absent, so Nix
				// pushes it again; the quarantined copy is then superseded.
				if err := n.CopyTo(url+"?compression=zstd&write-nar-listing=true&secret-key="+secret, out["app"]); err != nil {
					t.Fatal(err)
				}
				kissJSON(t, &restore, 0, "verify", "--json", "--restore", url)
				if len(restore.Restored) != 0 || len(restore.Kept) != 1 {
					t.Errorf("restore after a re-push: %+v, want the quarantined copy kept", restore)
				}
			} else {
				// Undoing the quarantine while the NAR is still missing keeps
				// it; with the NAR back, the narinfo returns.
				kissJSON(t, &restore, 0, "verify", "--json", "--restore", url)
				if len(restore.Restored) != 0 || len(restore.Kept) != 1 || !strings.Contains(restore.Kept[0].Reason, "NAR") {
					t.Errorf("restore with the NAR missing: %+v, want the quarantined copy kept for its NAR", restore)
				}
				orig := openStore(t, fileURL)
				r, err := orig.Get(e2eCtx(t), utilNAR)
				if err != nil {
					t.Fatal(err)
				}
				_, err = st.Put(e2eCtx(t), utilNAR, r, storage.PutOptions{})
				r.Close()
				if err != nil {
					t.Fatal(err)
				}
				kissJSON(t, &restore, 0, "verify", "--json", "--restore", url)
				if len(restore.Restored) != 1 {
					t.Errorf("restore: %+v, want util's narinfo back", restore)
				}
			}
			kissJSON(t, nil, 0, "verify", "--deep", "--trusted-key", public, url)
		})
	}
}

// narKeyOf reads the NAR key a narinfo's URL names, through the store.
func narKeyOf(t *testing.T, st storage.Store, key string) string {
	t.Helper()
	r, err := st.Get(e2eCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := nixcache.ParseNarInfo(data, "")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ni.NarKey()
	return k
}

// TestPinHistory: kiss with-lock --keep 2 pushes with the real nix copy to
// one marker three times, on file:// and S3 (through the ephemeral
// endpoint); the marker's previous value is kept as a generation that
// roots list shows and prune keeps, and the value before that is pruned.
func TestPinHistory(t *testing.T) {
	n := testenv.Nix(t)
	out := n.BuildAttrs(operatorExpr)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			url := backendStore(t, backend)
			st := openStore(t, url)
			for _, p := range []string{out["tool"], out["mid2"], out["garbage"]} {
				cmd := kissCmd(e2eCtx(t), t, n.Env, "with-lock", "--keep", "2", markerURL(url, "chan"), p,
					"--", "sh", "-c", `nix copy --to "$KISS_STORE" "$1"`, "sh", p)
				cmd.Dir = n.Dir
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("with-lock --keep 2 %s: %v\n%s", p, err, b)
				}
			}
			var list []struct {
				Source       string `json:"source"`
				GenerationOf string `json:"generation_of"`
				Generation   int    `json:"generation"`
			}
			kissJSON(t, &list, 0, "roots", "list", "--json", url)
			if len(list) != 2 || list[0].Source != "gcroots/chan" || list[1].GenerationOf != "gcroots/chan" || list[1].Generation != 2 {
				t.Fatalf("roots list: %+v, want gcroots/chan then its generation 2", list)
			}
			if backend == "s3" {
				waitStoreClockPast(t, st)
			}
			kissJSON(t, nil, 0, "prune", "--grace", "0s", url)
			present := func(p string) bool {
				_, err := st.Stat(e2eCtx(t), testenv.StoreHash(p)+".narinfo")
				return err == nil
			}
			if !present(out["garbage"]) || !present(out["mid2"]) || !present(out["lib"]) || present(out["tool"]) {
				t.Errorf("after prune: garbage %v, mid2 (generation) %v, lib %v, tool (trimmed) %v; want the last two values and their closure kept, the first gone",
					present(out["garbage"]), present(out["mid2"]), present(out["lib"]), present(out["tool"]))
			}
		})
	}
}
