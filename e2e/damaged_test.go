package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/internal/reliability"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// damagedCase is one line of testdata/damaged-cache.txt.
type damagedCase struct {
	line                   int
	name, backends, damage string
	flags                  []string
	expect                 string
}

func loadDamagedCorpus(t *testing.T) []damagedCase {
	t.Helper()
	f, err := os.Open("testdata/damaged-cache.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []damagedCase
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) != 5 {
			t.Fatalf("damaged-cache.txt:%d: %d columns, want 5 (name | backends | damage | flags | expect)", n, len(cols))
		}
		c := damagedCase{line: n, name: strings.TrimSpace(cols[0]), backends: strings.TrimSpace(cols[1]),
			damage: strings.TrimSpace(cols[2]), flags: strings.Fields(cols[3]), expect: strings.TrimSpace(cols[4])}
		if seen[c.name] || (c.backends != "both" && c.backends != "file") {
			t.Fatalf("damaged-cache.txt:%d: duplicate name or bad backends %q", n, c.backends)
		}
		seen[c.name] = true
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// basePath is one store path of the base cache.
type basePath struct {
	name, hash string
	refs       []string
	deriver    string
	narOf      string // another path whose NAR this narinfo names (twin)
}

// baseCache is the cache every damaged case starts from (see the comment at
// the top of testdata/damaged-cache.txt).
type baseCache struct {
	paths   map[string]*basePath
	objects map[string][]byte
}

func (b *baseCache) nar(p *basePath) (string, []byte) {
	if p.narOf != "" {
		return b.nar(b.paths[p.narOf])
	}
	body := bytes.Repeat([]byte("nar of "+p.name+"\n"), 20)
	h := sha256.Sum256(body)
	return "nar/" + nixbase32.EncodeToString(h[:]) + ".nar", body
}

func newBaseCache() *baseCache {
	b := &baseCache{paths: map[string]*basePath{}, objects: map[string][]byte{}}
	add := func(name string, refs ...string) *basePath {
		h := sha256.Sum256([]byte("damaged-corpus:" + name))
		p := &basePath{name: name, hash: nixbase32.EncodeToString(h[:20]), refs: refs}
		b.paths[name] = p
		return p
	}
	add("libc")
	add("lib", "libc")
	add("app1drv")
	add("app1", "lib").deriver = "app1drv"
	add("app2", "libc")
	add("junkdep")
	add("garbage", "junkdep", "libc")
	add("twin").narOf = "libc"
	for _, p := range b.paths {
		narKey, nar := b.nar(p)
		b.objects[narKey] = nar
		var refs []string
		for _, r := range p.refs {
			refs = append(refs, b.base(b.paths[r]))
		}
		info := fmt.Sprintf("StorePath: /nix/store/%s\nURL: %s\nCompression: none\nNarHash: sha256:0gxb81r7gprh2asvkw2ah5g9vmk4jhyz93lfx89wyr2srqay8m3b\nNarSize: %d\nReferences: %s\n",
			b.base(p), narKey, len(nar), strings.Join(refs, " "))
		if p.deriver != "" {
			info += "Deriver: " + b.base(b.paths[p.deriver]) + "\n"
		}
		b.objects[p.hash+".narinfo"] = []byte(info)
	}
	b.objects[b.paths["app1"].hash+".ls"] = []byte(`{"version":1,"root":{"type":"directory","entries":{}}}`)
	b.objects[b.paths["garbage"].hash+".ls"] = []byte(`{"version":1,"root":{"type":"directory","entries":{}}}`)
	b.objects["log/"+b.base(b.paths["app1drv"])] = []byte("building app1\n")
	b.objects["gcroots/web1"] = []byte("/nix/store/" + b.base(b.paths["app1"]) + "\n")
	b.objects["gcroots/sub/web2"] = []byte("/nix/store/" + b.base(b.paths["app2"]) + "\n")
	b.objects["nix-cache-info"] = []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
	return b
}

// base is <hash>-<name>; the derivation is named like one (…-app1.drv).
func (b *baseCache) base(p *basePath) string {
	if strings.HasSuffix(p.name, "drv") {
		return p.hash + "-" + strings.TrimSuffix(p.name, "drv") + ".drv"
	}
	return p.hash + "-" + p.name
}

var templateRE = regexp.MustCompile(`\{([a-z0-9]+)\.(info|nar|path|base|hash)\}`)

// expand fills the {P.x} templates of s.
func (b *baseCache) expand(t *testing.T, s string) string {
	t.Helper()
	return templateRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := templateRE.FindStringSubmatch(m)
		p, ok := b.paths[sub[1]]
		if !ok {
			t.Fatalf("unknown path %q in %q", sub[1], s)
		}
		switch sub[2] {
		case "info":
			return p.hash + ".narinfo"
		case "nar":
			k, _ := b.nar(p)
			return k
		case "path":
			return "/nix/store/" + b.base(p)
		case "base":
			return b.base(p)
		}
		return p.hash
	})
}

// expandKeys expands a keep=/gone= list ("garbage" is the garbage closure).
func (b *baseCache) expandKeys(t *testing.T, list string) []string {
	t.Helper()
	var out []string
	for _, k := range strings.Split(list, ",") {
		if k == "garbage" {
			out = append(out, b.expand(t, "{garbage.info}"), b.expand(t, "{garbage.nar}"), b.expand(t, "{junkdep.info}"),
				b.expand(t, "{junkdep.nar}"), b.expand(t, "{twin.info}"), b.expand(t, "{garbage.hash}.ls"))
			continue
		}
		out = append(out, b.expand(t, k))
	}
	return out
}

// unescape reads \n \r \t \\ and \xHH.
func unescape(t *testing.T, s string) []byte {
	t.Helper()
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			out = append(out, s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case '\\':
			out = append(out, '\\')
		case 'x':
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				t.Fatalf("bad escape in %q", s)
			}
			out = append(out, byte(v))
			i += 2
		default:
			t.Fatalf("bad escape \\%c in %q", s[i], s)
		}
	}
	return out
}

// damagedStore is one case's store: a directory (file://, with its parent
// holding "outside") or a bucket.
type damagedStore struct {
	url    string
	st     storage.Store
	dir    string // file:// only
	parent string
	fresh  map[string]bool
}

func (d *damagedStore) put(t *testing.T, key string, body []byte) {
	t.Helper()
	if _, err := d.st.Put(e2eCtx(t), key, bytes.NewReader(body), storage.PutOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (d *damagedStore) get(t *testing.T, key string) []byte {
	t.Helper()
	r, err := d.st.Get(e2eCtx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *damagedStore) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := d.st.Stat(e2eCtx(t), key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat %s: %v", key, err)
	}
	return err == nil
}

// apply runs one case's damage ops.
func (d *damagedStore) apply(t *testing.T, b *baseCache, damage string) {
	t.Helper()
	for _, op := range strings.Split(damage, ";") {
		op = strings.TrimLeft(op, " ")
		if op == "" {
			continue
		}
		verb, rest, _ := strings.Cut(op, " ")
		key, arg, _ := strings.Cut(rest, " ")
		key = b.expand(t, key)
		switch verb {
		case "rm":
			if err := d.st.Delete(e2eCtx(t), key, storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		case "put":
			d.put(t, key, unescape(t, b.expand(t, arg)))
		case "append":
			d.put(t, key, append(d.get(t, key), unescape(t, b.expand(t, arg))...))
		case "copy":
			d.put(t, b.expand(t, arg), d.get(t, key))
		case "truncate":
			n, _ := strconv.Atoi(arg)
			d.put(t, key, d.get(t, key)[:n])
		case "big":
			n, _ := strconv.Atoi(arg)
			big := bytes.Repeat([]byte{'\n'}, n)
			copy(big, b.expand(t, "{app1.path}\n"))
			d.put(t, key, big)
		case "fresh":
			d.fresh[key] = true
		case "symlink":
			if d.dir == "" {
				t.Fatalf("symlink on a bucket")
			}
			target := filepath.Join(d.parent, arg)
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(d.dir, key), target); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(d.dir, key)); err != nil {
				t.Fatal(err)
			}
		case "link": // file only: a symlink at KEY to TARGET ("outside/…" is outside the cache)
			target := b.expand(t, arg)
			if strings.HasPrefix(target, "outside/") {
				target = filepath.Join(d.parent, target)
			}
			d.fileOnly(t, op)
			if err := os.MkdirAll(filepath.Dir(filepath.Join(d.dir, key)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(d.dir, key)); err != nil {
				t.Fatal(err)
			}
		case "outside": // file only: a file outside the cache, next to it
			d.fileOnly(t, op)
			p := filepath.Join(d.parent, "outside", key)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, unescape(t, b.expand(t, arg)), 0o644); err != nil {
				t.Fatal(err)
			}
		case "fifo": // file only: a named pipe at KEY
			d.fileOnly(t, op)
			if err := os.MkdirAll(filepath.Dir(filepath.Join(d.dir, key)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(filepath.Join(d.dir, key), 0o644); err != nil {
				t.Fatal(err)
			}
		case "fileat": // file only: KEY becomes a regular file, whatever was there
			d.fileOnly(t, op)
			if err := os.RemoveAll(filepath.Join(d.dir, key)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d.dir, key), unescape(t, b.expand(t, arg)), 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unknown op %q", op)
		}
	}
}

func (d *damagedStore) fileOnly(t *testing.T, op string) {
	t.Helper()
	if d.dir == "" {
		t.Fatalf("%q needs a file:// cache (mark the case file)", op)
	}
}

// age makes every object of a file:// case 3 h old, but those marked fresh.
func (d *damagedStore) age(t *testing.T) {
	t.Helper()
	old := time.Now().Add(-3 * time.Hour)
	err := filepath.WalkDir(d.dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			return err
		}
		rel, _ := filepath.Rel(d.dir, p)
		if d.fresh[filepath.ToSlash(rel)] {
			return nil
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rootedClosure lists the keys a prune must keep, read from the damaged
// store independently of the pruner's own walk: every marker under
// gcroots/ (no dot segment) that parses, every narinfo its paths reach that
// can be read, their NARs, and the derivers present. Paths the damage made
// unreadable are left out (a refusal must then keep everything anyway), and
// so are markers older than maxAge (--root-max-age: they expire by design).
func rootedClosure(t *testing.T, st storage.Store, maxAge time.Duration) map[string]bool {
	t.Helper()
	ctx := e2eCtx(t)
	now, err := st.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{}
	exists := func(k string) bool { _, err := st.Stat(ctx, k); return err == nil }
	var queue []nixcache.Hash
	for obj, err := range st.List(ctx, "gcroots/") {
		if err != nil {
			t.Fatal(err)
		}
		if maxAge > 0 && now.Sub(obj.ModTime) > maxAge {
			continue
		}
		dot := false
		for _, seg := range strings.Split(obj.Key, "/") {
			dot = dot || strings.HasPrefix(seg, ".")
		}
		if dot || obj.Size > nixcache.MaxMarkerSize {
			continue
		}
		r, err := st.Get(ctx, obj.Key)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(r)
		r.Close()
		roots, _, err := nixcache.ParseMarker(body, "/nix/store")
		if err != nil {
			continue
		}
		queue = append(queue, roots...)
	}
	seen := map[nixcache.Hash]bool{}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if seen[h] {
			continue
		}
		seen[h] = true
		key := nixcache.NarInfoKey(h)
		r, err := st.Get(ctx, key)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(r)
		r.Close()
		ni, err := nixcache.ParseNarInfo(body, "/nix/store")
		if err != nil || ni.Hash != h {
			continue
		}
		keep[key] = true
		if nk, ok := ni.NarKey(); ok && exists(nk) {
			keep[nk] = true
		}
		queue = append(queue, ni.References...)
		if ni.HasDeriver {
			if _, err := st.Stat(ctx, nixcache.NarInfoKey(ni.Deriver)); err == nil {
				queue = append(queue, ni.Deriver)
			}
		}
	}
	return keep
}

var (
	exitRE = regexp.MustCompile(`^exit=(\d+)`)
	listRE = regexp.MustCompile(`\b(keep|gone|warn)=(\S+)`)
)

// TestDamagedCacheCorpus runs testdata/damaged-cache.txt: each case on a
// fresh copy of the base cache, damaged, pruned by the kiss binary, on
// file:// and on versitygw; the outcome must be the one the table names,
// and no rooted path may be lost.
func TestDamagedCacheCorpus(t *testing.T) {
	testenv.SkipShort(t, "runs the kiss binary on file:// and versitygw")
	cases := loadDamagedCorpus(t)
	b := newBaseCache()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			start := time.Now()
			stores := map[string]*damagedStore{}
			var s3Stores []storage.Store
			for _, c := range cases {
				if backend == "s3" && c.backends == "file" {
					continue
				}
				d := &damagedStore{fresh: map[string]bool{}}
				if backend == "file" {
					d.parent = t.TempDir()
					d.dir = filepath.Join(d.parent, "cache")
					d.url = "file://" + d.dir
				} else {
					d.url = testenv.Versitygw(t)
				}
				if err := os.MkdirAll(d.dir, 0o755); d.dir != "" && err != nil {
					t.Fatal(err)
				}
				d.st = openStore(t, d.url)
				for k, v := range b.objects {
					d.put(t, k, v)
				}
				d.apply(t, b, c.damage)
				if backend == "file" {
					d.age(t)
				} else {
					s3Stores = append(s3Stores, d.st)
				}
				stores[c.name] = d
			}
			// One wait for the S3 clock to pass every object (--grace 0s
			// must see them as old), not one per case.
			if len(s3Stores) > 0 {
				waitStoreClockPast(t, s3Stores[len(s3Stores)-1])
			}
			var (
				mu                         sync.Mutex
				ran, matched, rooted, lost int64
				refused, pruned, locked    int64
			)
			for _, c := range cases {
				d, ok := stores[c.name]
				if !ok {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					var maxAge time.Duration
					for i, f := range c.flags {
						if f == "--root-max-age" && i+1 < len(c.flags) {
							maxAge, _ = time.ParseDuration(c.flags[i+1])
						}
					}
					keep := rootedClosure(t, d.st, maxAge)
					before := snapshotStore(t, d.st)
					args := append([]string{"prune", "--grace", "0s", d.url}, c.flags...)
					if !slices.Contains(c.flags, "--lock-wait") {
						args = append(args, "--lock-wait", "20s") // a fresh lease must not cost the default 10m
					}
					res := testenv.RunKiss(t, nil, args...)
					ok := checkDamagedOutcome(t, b, c, d, res, before)
					lostHere := 0
					for k := range keep {
						if !d.exists(t, k) {
							t.Errorf("ROOTED PATH LOST: %s (rooted in the damaged cache) is gone after the prune", k)
							lostHere++
						}
					}
					mu.Lock()
					defer mu.Unlock()
					ran++
					rooted += int64(len(keep))
					lost += int64(lostHere)
					switch res.ExitCode {
					case exitRefused:
						refused++
					case 0:
						pruned++
					case 5:
						locked++
					}
					if ok && lostHere == 0 {
						matched++
					}
				})
			}
			t.Logf("%s: %d cases, %d as expected, %d rooted objects checked, %d lost", backend, ran, matched, rooted, lost)
			if err := reliability.Record(os.Getenv(reliability.EnvDir), reliability.Result{
				Suite: "damaged-cache", Variant: backend, Test: "TestDamagedCacheCorpus/" + backend,
				Command: "go test -run 'TestDamagedCacheCorpus/" + backend + "' -v ./e2e/",
				Tried:   map[string]int64{"cases": ran, "rooted objects checked": rooted},
				Held: map[string]int64{"outcome as the table says": matched, "refused (exit 4, cache unchanged)": refused,
					"pruned (exit 0)": pruned, "locked (exit 5)": locked},
				Lost: lost, Seconds: time.Since(start).Seconds(), Passed: !t.Failed(),
			}); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkDamagedOutcome checks a case's expectation and reports whether it held.
func checkDamagedOutcome(t *testing.T, b *baseCache, c damagedCase, d *damagedStore, res testenv.KissResult, before snapshot) bool {
	t.Helper()
	failed := false
	fail := func(format string, a ...any) {
		t.Helper()
		t.Errorf("damaged-cache.txt:%d %s: "+format, append([]any{c.line, c.name}, a...)...)
		failed = true
	}
	if c.expect == "refuses" {
		if res.ExitCode != exitRefused {
			fail("exit %d, want %d (refused)", res.ExitCode, exitRefused)
		}
		if diff := diffSnapshots(before, snapshotStore(t, d.st), "before", "after"); len(diff) > 0 {
			fail("a refused prune changed the cache:\n%s", strings.Join(diff, "\n"))
		}
		return !failed
	}
	m := exitRE.FindStringSubmatch(c.expect)
	if m == nil {
		t.Fatalf("damaged-cache.txt:%d: expect %q: want refuses or exit=N", c.line, c.expect)
	}
	if want, _ := strconv.Atoi(m[1]); res.ExitCode != want {
		fail("exit %d, want %d", res.ExitCode, want)
	}
	for _, l := range listRE.FindAllStringSubmatch(c.expect, -1) {
		switch l[1] {
		case "keep", "gone":
			var wrong []string
			for _, k := range b.expandKeys(t, l[2]) {
				if d.exists(t, k) != (l[1] == "keep") {
					wrong = append(wrong, k)
				}
			}
			sort.Strings(wrong)
			if len(wrong) > 0 {
				fail("want %s: %s", l[1], strings.Join(wrong, ", "))
			}
		case "warn":
			if w := b.expand(t, l[2]); !strings.Contains(res.Stdout+res.Stderr, w) {
				fail("output does not mention %q", w)
			}
		}
	}
	return !failed
}
