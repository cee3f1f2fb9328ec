package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/reliability"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// The torture run: concurrent writers pushing closures that share
// dependencies with the real Nix 2.8 — through `kiss with-lock` on file://
// and on S3, through `kiss serve` with OIDC (over file://) and with mTLS
// (over S3), and plain writers that skip the protocol and rely on the grace
// period — while a pruner loops on each store (--grace 0s where every
// writer takes a lease, a grace period where some do not), markers are
// retired, readers substitute rooted closures with the real Nix, and an
// attacker keeps trying to write without the right to. After every prune an
// invariant checker asserts: every marker the run wrote (and did not
// retire) still roots a complete closure (I1), every narinfo in the store
// has its NAR (I2), and nothing an unauthorised client sent landed.
//
// Bounded: KISS_TORTURE_DURATION (default 45s) of concurrent work, then a
// quiescent prune and a full check. The long run is documented in
// docs/reliability.md (KISS_TORTURE_DURATION=30m).

// tortureDuration is how long the concurrent phase runs.
func tortureDuration(t *testing.T) time.Duration {
	d := 45 * time.Second
	if v := os.Getenv("KISS_TORTURE_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("KISS_TORTURE_DURATION=%q: %v", v, err)
		}
	}
	return d
}

// figures counts what a run tried and saw, by name.
type figures struct {
	mu sync.Mutex
	m  map[string]int64
}

func (f *figures) add(name string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]int64{}
	}
	f.m[name] += n
}

func (f *figures) inc(name string) { f.add(name, 1) }

func (f *figures) get(name string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[name]
}

func (f *figures) snapshot() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int64, len(f.m))
	for k, v := range f.m {
		out[k] = v
	}
	return out
}

// tortureStore is one cache of the run with what the run knows it holds.
type tortureStore struct {
	name    string // file, s3, plain
	url     string // the store URL kiss is given
	st      storage.Store
	readURL string // where readers substitute from
	grace   string // --grace of its pruner
	dir     string // file:// stores

	// mu: readers and the checker hold it shared, the retirer exclusive,
	// so a marker never disappears under a check.
	mu      sync.RWMutex
	roots   map[string]string // marker key → top attribute
	pending map[string]string // plain writers: marker → the top just pushed
}

// setPending and takePending carry the top a plain writer built from its
// push to the writer loop.
func (s *tortureStore) setPending(marker, top string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]string{}
	}
	s.pending[marker] = top
}

func (s *tortureStore) takePending(marker string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	top, ok := s.pending[marker]
	delete(s.pending, marker)
	return top, ok
}

func (s *tortureStore) dropRoot(marker string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.roots, marker)
}

func (s *tortureStore) addRoot(marker, top string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roots[marker] = top
}

// torture is the whole run's shared state.
type torture struct {
	t      *testing.T
	n      *testenv.NixEnv
	sk, pk string
	tops   []string // attribute names
	// out and closure are the tops built before the run (read-only while
	// it runs); unique holds those the plain writer builds as it goes.
	out      map[string]string   // attribute → output path
	closure  map[string][]string // top attribute → narinfo keys of its closure
	unique   sync.Map            // name → uniqueTop
	nUnique  atomic.Int64
	figs     figures
	lost     atomic.Int64 // rooted store paths found missing
	unauth   atomic.Int64 // unauthorised writes that landed
	deadline time.Time
	evil     sync.Map // keys an unauthorised client tried to write
	procs    procs    // running kiss processes, for the chaos actor
}

// tortureExpr builds nLibs shared libraries over one base, and nTops tops,
// each depending on two libraries, so closures overlap.
func tortureExpr(nLibs, nTops int) string {
	var b strings.Builder
	b.WriteString("rec {\n  base = mk \"t-base\" \"echo base-${nonce} > $out\";\n")
	for i := range nLibs {
		fmt.Fprintf(&b, "  lib%d = mk \"t-lib%d\" \"mkdir $out; echo ${base} > $out/dep; echo lib%d-${nonce} > $out/id\";\n", i, i, i)
	}
	for i := range nTops {
		a, c := i%nLibs, (i*5+1)%nLibs
		fmt.Fprintf(&b, "  top%d = mk \"t-top%d\" \"mkdir $out; echo ${lib%d} ${lib%d} > $out/deps; echo top%d-${nonce} > $out/id\";\n", i, i, a, c, i)
	}
	b.WriteString("}\n")
	return b.String()
}

// procs is the registry of running kiss processes the chaos actor may kill.
type procs struct {
	mu sync.Mutex
	m  map[int]string // pid → what it is
}

func (p *procs) add(pid int, what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int]string{}
	}
	p.m[pid] = what
}

func (p *procs) remove(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, pid)
}

// killOne sends SIGKILL to a random running kiss process and says what it was.
func (p *procs) killOne(rng *rand.Rand) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pids []int
	for pid := range p.m {
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return "", false
	}
	sort.Ints(pids)
	pid := pids[rng.IntN(len(pids))]
	if syscall.Kill(pid, syscall.SIGKILL) != nil {
		return "", false
	}
	what := p.m[pid]
	delete(p.m, pid)
	return what, true
}

// runBounded runs cmd with a time bound. On timeout the process gets
// SIGQUIT first, so a Go program (kiss) prints every goroutine's stack:
// a hang is diagnosed, not just killed.
func runBounded(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, int, error) {
	return runRegistered(ctx, nil, "", timeout, env, name, args...)
}

// runRegistered is runBounded with the process in reg (as what) while it
// runs, so the chaos actor can kill it.
func runRegistered(ctx context.Context, reg *procs, what string, timeout time.Duration, env []string, name string, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err == nil {
		if reg != nil {
			reg.add(cmd.Process.Pid, what)
			defer reg.remove(cmd.Process.Pid)
		}
		err = cmd.Wait()
	}
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		return out.String(), code, fmt.Errorf("timed out after %v (SIGQUIT sent; stacks above): %w", timeout, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil // the exit code says it
	}
	return out.String(), code, err
}

func TestTorture(t *testing.T) {
	testenv.SkipShort(t, "the torture run (real Nix, versitygw, kiss serve)")
	start := time.Now()
	// The bucket first: it sets the AWS_* variables that the Nix
	// environment (and every kiss it runs) inherits.
	bucket := testenv.VersitygwBucket(t)
	n := testenv.Nix(t)
	tt := &torture{t: t, n: n, out: map[string]string{}, closure: map[string][]string{}}
	tt.sk, tt.pk = n.GenerateKey("kiss-torture-" + n.Nonce[:6])
	const nLibs, nTops = 6, 16
	tt.out = n.BuildAttrs(tortureExpr(nLibs, nTops))
	for a := range tt.out {
		if strings.HasPrefix(a, "top") {
			tt.tops = append(tt.tops, a)
			cl, err := n.Closure("", tt.out[a])
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range cl {
				tt.closure[a] = append(tt.closure[a], testenv.StoreHash(p)+".narinfo")
			}
		}
	}
	sort.Strings(tt.tops)
	t.Logf("built %d derivations in %v", len(tt.out), time.Since(start).Round(time.Millisecond))

	pki := testenv.PKI(t)
	writerCert, readerCert := pki.Client("torture-writer"), pki.Client("torture-reader")
	issuer := testenv.NewOIDCIssuer(t)
	const aud = "kiss-torture"
	writeToken := issuer.Token("repo:kiss/torture:ref:refs/heads/main", aud, time.Hour)

	newStore := func(name, url, grace string) *tortureStore {
		s := &tortureStore{name: name, url: url, grace: grace, roots: map[string]string{}}
		if dir, ok := strings.CutPrefix(url, "file://"); ok {
			s.dir = dir
			s.readURL = url
		}
		s.st = openStore(t, url)
		if _, err := s.st.Put(e2eCtx(t), "nix-cache-info", strings.NewReader("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	fileStore := newStore("file", "file://"+t.TempDir(), "0s")
	s3Store := newStore("s3", bucket.URL, "0s")
	// Plain writers take no lease: their store's pruner keeps a grace
	// period longer than a push lasts (the default, 2h, would keep
	// everything in a short run).
	plainStore := newStore("plain", "file://"+t.TempDir(), "20s")
	stores := []*tortureStore{fileStore, s3Store, plainStore}

	// A permanent root in every store (a prune with no root at all is
	// refused, rightly): top0, pushed and registered before the run.
	for _, s := range stores {
		out, code, err := runBounded(e2eCtx(t), 3*time.Minute, n.Env, testenv.KissBinary(t), "with-lock", markerURL(s.url, "base"), tt.out["top0"], "--",
			"sh", "-c", `nix copy --to "$KISS_STORE?compression=zstd&secret-key=$1" "$2"`, "_", tt.sk, tt.out["top0"])
		if err != nil || code != 0 {
			t.Fatalf("%s: seeding the base root: exit %d %v\n%s", s.name, code, err, out)
		}
		s.roots["gcroots/base"] = "top0"
	}

	t.Setenv("KISS_LOG_LEVEL", "warn") // the gateways: no access log per request
	oidcGW := startServe(t, fileStore.url, "--oidc-issuer", issuer.Issuer, "--oidc-audience", aud,
		"--oidc-jwks-url", issuer.JWKSURL, "--oidc-write-subject", "repo:kiss/torture:*",
		"--oidc-read-subject", "repo:kiss/reader", "--require-signature", tt.pk)
	mtlsGW := startServe(t, s3Store.url, "--tls-cert", pki.Server.CertFile, "--tls-key", pki.Server.KeyFile,
		"--client-ca", pki.CAFile, "--writer", "CN=torture-writer", "--require-signature", tt.pk)
	s3Store.readURL = startServe(t, s3Store.url, "--open-reads", "--read-only")

	// Writers: each a goroutine pushing random tops until the deadline.
	type writer struct {
		kind  string
		store *tortureStore
		push  func(ctx context.Context, marker, top string) (string, int, error)
	}
	withLock := func(markerURL, top string, extra ...string) []string {
		args := append([]string{"with-lock", markerURL, tt.outOf(top), "--lock-ttl", "10s", "--lock-wait", "60s"}, extra...)
		return append(args, "--", "sh", "-c", `nix copy --to "$KISS_STORE?compression=zstd&secret-key=$1" "$2"`, "_", tt.sk, tt.outOf(top))
	}
	kiss := testenv.KissBinary(t)
	writers := []writer{
		{"with-lock file", fileStore, func(ctx context.Context, m, top string) (string, int, error) {
			return runRegistered(ctx, &tt.procs, "writer", 3*time.Minute, n.Env, kiss, withLock(fileStore.dir+"/"+m, top)...)
		}},
		{"with-lock file", fileStore, func(ctx context.Context, m, top string) (string, int, error) {
			return runRegistered(ctx, &tt.procs, "writer", 3*time.Minute, n.Env, kiss, withLock(fileStore.dir+"/"+m, top)...)
		}},
		{"with-lock gateway oidc", fileStore, func(ctx context.Context, m, top string) (string, int, error) {
			return runRegistered(ctx, &tt.procs, "writer", 3*time.Minute, n.Env, kiss, withLock(oidcGW+"/"+m, top, "--bearer", writeToken)...)
		}},
		{"with-lock s3", s3Store, func(ctx context.Context, m, top string) (string, int, error) {
			return runRegistered(ctx, &tt.procs, "writer", 3*time.Minute, n.Env, kiss, withLock(markerURL(s3Store.url, strings.TrimPrefix(m, "gcroots/")), top)...)
		}},
		{"with-lock gateway mtls", s3Store, func(ctx context.Context, m, top string) (string, int, error) {
			return runRegistered(ctx, &tt.procs, "writer", 3*time.Minute, n.Env, kiss, withLock(mtlsGW+"/"+m, top,
				"--cert", writerCert.CertFile, "--key", writerCert.KeyFile, "--cacert", pki.CAFile)...)
		}},
		{"plain (no lease)", plainStore, func(ctx context.Context, m, _ string) (string, int, error) {
			// A writer without a lease is safe only for paths that are new
			// in the cache: the grace period keeps newborn objects, but a
			// path `nix copy` skips because it is already there may be
			// deleted by a prune that planned it before the marker landed
			// (docs/locks.md, "Writers that skip the lock"). So a plain
			// writer pushes a closure built for this push alone.
			top, path, err := tt.buildUnique(ctx)
			if err != nil {
				return err.Error(), 1, nil
			}
			out, code, err := runBounded(ctx, 3*time.Minute, n.Env, "nix", "copy", "--to",
				plainStore.url+"?compression=zstd&secret-key="+tt.sk, path)
			if err != nil || code != 0 {
				return out, code, err
			}
			plainStore.setPending(m, top)
			// The marker after the push, atomically, as a script would.
			tmp := filepath.Join(plainStore.dir, "gcroots", ".tmp-"+filepath.Base(m))
			if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
				return out, 1, err
			}
			if err := os.WriteFile(tmp, []byte(path+"\n"), 0o644); err != nil {
				return out, 1, err
			}
			return out, 0, os.Rename(tmp, filepath.Join(plainStore.dir, m))
		}},
	}

	ctx, cancel := context.WithCancel(e2eCtx(t))
	defer cancel()
	tt.deadline = time.Now().Add(tortureDuration(t))
	var wg sync.WaitGroup
	for i, w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			seq := 0
			for time.Now().Before(tt.deadline) && ctx.Err() == nil {
				top := tt.tops[rng.IntN(len(tt.tops))]
				// A writer keeps three channels and updates one at a time,
				// as CI does: the top a marker rooted before is garbage
				// once no other marker roots it. The marker leaves the
				// checker's map while its push runs (it is being replaced).
				seq++
				marker := fmt.Sprintf("gcroots/w%d-%d", i, seq%3)
				w.store.dropRoot(marker)
				out, code, err := w.push(ctx, marker, top)
				switch {
				case err != nil:
					t.Errorf("%s push of %s: %v\n%s", w.kind, top, err, out)
					return
				case code == 0:
					if p, ok := w.store.takePending(marker); ok {
						top = p // a plain writer built its own
					}
					w.store.addRoot(marker, top)
					tt.figs.inc("pushes ok: " + w.kind)
				case code == 5:
					tt.figs.inc("pushes that waited out --lock-wait (exit 5): " + w.kind)
				case code == -1:
					// SIGKILLed by the chaos actor: no marker, perhaps a
					// lease left behind, perhaps half a push.
				case testenv.IsCoroutineFinished(out):
					tt.figs.inc("nix 2.8 coroutine failures retried (NixOS/nix#6417)")
				default:
					t.Errorf("%s push of %s: exit %d\n%s", w.kind, top, code, out)
					return
				}
				if strings.Contains(out, "cache is being pruned") {
					tt.figs.inc("pushes that waited for a prune: " + w.kind)
				}
			}
		})
	}
	// A pruner loop per store, the invariant checker after every prune.
	for _, s := range stores {
		wg.Go(func() {
			for time.Now().Before(tt.deadline) && ctx.Err() == nil {
				tt.prune(ctx, s, s.grace)
				tt.check(s)
				time.Sleep(200 * time.Millisecond)
			}
		})
		// A second, competing pruner on the file store.
		if s == fileStore {
			wg.Go(func() {
				for time.Now().Before(tt.deadline) && ctx.Err() == nil {
					tt.prune(ctx, s, s.grace)
					time.Sleep(700 * time.Millisecond)
				}
			})
		}
		// Retirement: old markers are removed, so their unique paths
		// become garbage while shared ones stay rooted by others.
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(len(s.name)), 7))
			for time.Now().Before(tt.deadline) && ctx.Err() == nil {
				time.Sleep(3 * time.Second)
				tt.retire(ctx, s, rng)
			}
		})
		// Readers: the real Nix substitutes a rooted closure, signatures
		// checked.
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(len(s.name)), 9))
			for time.Now().Before(tt.deadline) && ctx.Err() == nil {
				tt.read(s, rng)
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	// Chaos: kill -9 of a running writer or pruner (kiss itself) every few
	// seconds, at whatever point it has reached.
	if os.Getenv("KISS_TORTURE_KILL") != "0" {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(3, 5))
			for time.Now().Before(tt.deadline) && ctx.Err() == nil {
				time.Sleep(time.Duration(1500+rng.IntN(3000)) * time.Millisecond)
				if what, ok := tt.procs.killOne(rng); ok {
					tt.figs.inc("kill -9: " + what)
				}
			}
		})
	}
	// The attacker.
	wg.Go(func() {
		tt.attack(ctx, fileStore, s3Store, oidcGW, mtlsGW, issuer, aud, pki, readerCert)
	})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Quiescent: a grace-0 prune of each store (every push has finished),
	// a full check, every remaining root substituted, and the retired
	// tops' own outputs gone.
	for _, s := range stores {
		waitStoreClockPast(t, s.st)
		tt.prune(ctx, s, "0s")
		tt.check(s)
		// What the store's markers root now: the run's own, and any a
		// writer killed after writing its marker left behind.
		rooted := map[string]bool{}
		byPath := map[string]string{}
		for _, top := range tt.tops {
			byPath[tt.outOf(top)] = top
		}
		tt.unique.Range(func(k, v any) bool { byPath[v.(uniqueTop).path] = k.(string); return true })
		for obj, err := range s.st.List(e2eCtx(t), "gcroots/") {
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(obj.Key, "/.") {
				continue // leases, temp files
			}
			r, err := s.st.Get(e2eCtx(t), obj.Key)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r)
			r.Close()
			for _, line := range strings.Fields(string(body)) {
				if top, ok := byPath[line]; ok {
					rooted[top] = true
				}
			}
		}
		for top := range rooted {
			dst := n.NewStore()
			if err := n.SubstituteFrom(s.readURL, dst, tt.pk, tt.outOf(top)); err != nil {
				t.Errorf("%s: final substitution of rooted %s: %v", s.name, top, err)
				tt.lost.Add(1)
			} else {
				tt.figs.inc("final substitutions ok")
			}
		}
		for _, top := range tt.tops {
			if rooted[top] {
				continue
			}
			key := testenv.StoreHash(tt.outOf(top)) + ".narinfo"
			if _, err := s.st.Stat(e2eCtx(t), key); err == nil {
				t.Errorf("%s: %s is rooted by nothing, yet the quiescent grace-0 prune kept it", s.name, top)
			}
		}
	}
	tt.finalUnauthorisedCheck(stores)

	// The checker can fail: a rooted NAR removed behind kiss's back is
	// reported (a negative control, as the spin model has its broken
	// variants).
	if !t.Failed() {
		s := fileStore
		s.mu.RLock()
		var top string
		for _, tp := range s.roots {
			top = tp
			break
		}
		s.mu.RUnlock()
		r, err := s.st.Get(e2eCtx(t), tt.closureOf(top)[0])
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r)
		r.Close()
		ni, err := nixcache.ParseNarInfo(body, "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		nk, _ := ni.NarKey()
		if err := s.st.Delete(e2eCtx(t), nk, storage.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if v := tt.violations(s); v.lost == 0 {
			t.Errorf("the checker did not notice a rooted NAR (%s) removed behind kiss's back", nk)
		} else {
			tt.figs.inc("checker negative control: removed rooted NAR detected")
		}
	}

	figs := tt.figs.snapshot()
	var lines []string
	for k, v := range figs {
		lines = append(lines, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(lines)
	t.Logf("torture: %v, rooted paths lost %d, unauthorised writes landed %d\n  %s",
		time.Since(start).Round(time.Second), tt.lost.Load(), tt.unauth.Load(), strings.Join(lines, "\n  "))
	if figs["objects deleted by prunes"] == 0 {
		t.Error("no prune deleted anything: the run proved nothing about deletion")
	}
	tried, held := map[string]int64{}, map[string]int64{}
	for k, v := range figs {
		switch {
		case strings.HasPrefix(k, "pushes ok"), strings.HasPrefix(k, "prunes ok"), strings.HasPrefix(k, "unauthorised attempts refused"),
			strings.HasPrefix(k, "checks passed"), strings.HasPrefix(k, "substitutions ok"), k == "final substitutions ok", strings.HasPrefix(k, "rooted paths verified"):
			held[k] = v
		default:
			tried[k] = v
		}
	}
	tried["duration seconds"] = int64(tortureDuration(t).Seconds())
	if err := reliability.Record(os.Getenv(reliability.EnvDir), reliability.Result{
		Suite: "torture", Variant: "file+s3+gateways", Test: "TestTorture",
		Command: "KISS_TORTURE_DURATION=" + tortureDuration(t).String() + " go test -run TestTorture -v -timeout 60m ./e2e/",
		Tried:   tried, Held: held, Lost: tt.lost.Load(), Unauthorized: tt.unauth.Load(),
		Seconds: time.Since(start).Seconds(), Passed: !t.Failed(),
	}); err != nil {
		t.Error(err)
	}
}

// prune runs one `kiss prune` on s and counts what it did.
func (tt *torture) prune(ctx context.Context, s *tortureStore, grace string) {
	out, code, err := runRegistered(ctx, &tt.procs, "pruner", 3*time.Minute, tt.n.Env, testenv.KissBinary(tt.t),
		"--json", "prune", "--grace", grace, "--lock-ttl", "10s", "--lock-wait", "60s", s.url)
	if err != nil {
		tt.t.Errorf("%s: prune: %v\n%s", s.name, err, out)
		return
	}
	switch code {
	case 0:
		tt.figs.inc("prunes ok: " + s.name)
	case 5:
		tt.figs.inc("prunes that waited out --lock-wait: " + s.name)
		return
	case -1:
		return // SIGKILLed by the chaos actor
	default:
		tt.t.Errorf("%s: prune exited %d\n%s", s.name, code, out)
		return
	}
	var rep struct {
		Deleted struct {
			Objects int64 `json:"objects"`
		} `json:"deleted"`
	}
	if i := strings.Index(out, "{"); i >= 0 {
		_ = json.NewDecoder(strings.NewReader(out[i:])).Decode(&rep)
	}
	tt.figs.add("objects deleted by prunes", rep.Deleted.Objects)
	if strings.Contains(out, "waiting for writers") {
		tt.figs.inc("prunes that waited for writers: " + s.name)
	}
}

// check asserts the invariants on s: every marker the run holds roots a
// complete closure (narinfos and NARs), every narinfo has its NAR, no
// unauthorised key exists.
func (tt *torture) check(s *tortureStore) {
	v := tt.violations(s)
	for _, msg := range v.msgs {
		tt.t.Errorf("%s: %s", s.name, msg)
	}
	tt.figs.add("rooted paths verified", v.verified)
	tt.lost.Add(v.lost)
	tt.unauth.Add(v.unauth)
	if len(v.msgs) == 0 {
		tt.figs.inc("checks passed")
	}
}

// violation is what one check found.
type violation struct {
	msgs         []string
	verified     int64
	lost, unauth int64
}

// violations checks the invariants on s: every marker the run holds roots
// a complete closure (narinfos and NARs), every narinfo in the store has its
// NAR, and no key an unauthorised client sent exists.
func (tt *torture) violations(s *tortureStore) violation {
	var v violation
	ctx := e2eCtx(tt.t)
	s.mu.RLock()
	defer s.mu.RUnlock()
	tops := map[string]string{} // top → one marker rooting it
	for marker, top := range s.roots {
		if _, err := s.st.Stat(ctx, marker); err != nil {
			v.msgs = append(v.msgs, fmt.Sprintf("marker %s (rooting %s) is gone: %v", marker, top, err))
			continue
		}
		tops[top] = marker
	}
	for top, marker := range tops {
		for _, key := range tt.closureOf(top) {
			v.verified++
			if !tt.complete(s, key) {
				v.msgs = append(v.msgs, fmt.Sprintf("ROOTED PATH LOST: %s (closure of %s, marker %s)", key, top, marker))
				v.lost++
			}
		}
	}
	// I2 over the whole store.
	for obj, err := range s.st.List(ctx, "") {
		if err != nil {
			v.msgs = append(v.msgs, fmt.Sprintf("list: %v", err))
			return v
		}
		if k, _ := nixcache.Classify(obj.Key); k == nixcache.KindNarInfo && !tt.complete(s, obj.Key) {
			if _, err := s.st.Stat(ctx, obj.Key); err == nil { // not deleted meanwhile
				v.msgs = append(v.msgs, fmt.Sprintf("I2 violated: %s is present without its NAR", obj.Key))
			}
		}
		if _, ok := tt.evil.Load(obj.Key); ok {
			v.msgs = append(v.msgs, "UNAUTHORISED WRITE LANDED: "+obj.Key)
			v.unauth++
		}
	}
	return v
}

// complete reports whether the narinfo key exists and names a NAR that
// exists.
func (tt *torture) complete(s *tortureStore, key string) bool {
	ctx := e2eCtx(tt.t)
	r, err := s.st.Get(ctx, key)
	if err != nil {
		return false
	}
	body, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return false
	}
	ni, err := nixcache.ParseNarInfo(body, "/nix/store")
	if err != nil {
		tt.t.Errorf("%s: %s does not parse: %v", s.name, key, err)
		return false
	}
	nk, ok := ni.NarKey()
	if !ok {
		return false
	}
	_, err = s.st.Stat(ctx, nk)
	return err == nil
}

// retire removes one marker (not among the newest), as an operator would.
func (tt *torture) retire(ctx context.Context, s *tortureStore, rng *rand.Rand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var markers []string
	for m := range s.roots {
		if m != "gcroots/base" {
			markers = append(markers, m)
		}
	}
	if len(markers) < 3 {
		return
	}
	sort.Strings(markers)
	m := markers[rng.IntN(len(markers)-1)]
	out, code, err := runBounded(ctx, time.Minute, tt.n.Env, testenv.KissBinary(tt.t), "roots", "rm", s.url, strings.TrimPrefix(m, "gcroots/"))
	if err != nil || code != 0 {
		tt.t.Errorf("%s: roots rm %s: exit %d %v\n%s", s.name, m, code, err, out)
		return
	}
	delete(s.roots, m)
	tt.figs.inc("markers retired")
}

// read substitutes one rooted closure with the real Nix.
func (tt *torture) read(s *tortureStore, rng *rand.Rand) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.roots) == 0 {
		return
	}
	var tops []string
	for _, top := range s.roots {
		tops = append(tops, top)
	}
	sort.Strings(tops)
	top := tops[rng.IntN(len(tops))]
	if err := tt.n.SubstituteFrom(s.readURL, tt.n.NewStore(), tt.pk, tt.outOf(top)); err != nil {
		tt.t.Errorf("%s: substituting rooted %s: %v", s.name, top, err)
		tt.lost.Add(1)
		return
	}
	tt.figs.inc("substitutions ok: " + s.name)
}

// attack keeps trying to write without the right to: a reader certificate
// and certificates the CA did not issue (or that expired) on the mTLS
// gateway; no token, a read-only token, forged, expired and
// wrong-audience tokens on the OIDC gateway. Every attempt must be refused.
func (tt *torture) attack(ctx context.Context, fileStore, s3Store *tortureStore, oidcGW, mtlsGW string, is *testenv.OIDCIssuer, aud string, pki *testenv.PKIEnv, reader testenv.Cert) {
	t := tt.t
	// Issue 11 item 4: the writer shorthand CN=torture-writer must not
	// match a subject with a second CN.
	twoCN := pki.ClientSubject("two-cn", pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "torture-writer"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "reader"}},
	})
	client := func(cert *testenv.Cert) *http.Client {
		tc := &tls.Config{RootCAs: pki.Pool()}
		if cert != nil {
			tc.Certificates = []tls.Certificate{cert.TLS}
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	type attempt struct {
		who    string
		client *http.Client
		base   string
		bearer string
		store  *tortureStore
	}
	attempts := []attempt{
		{"mtls: reader certificate", client(&reader), mtlsGW, "", s3Store},
		{"mtls: expired writer certificate", client(&pki.Expired), mtlsGW, "", s3Store},
		{"mtls: certificate of a foreign CA", client(&pki.Foreign), mtlsGW, "", s3Store},
		{"mtls: no certificate", client(nil), mtlsGW, "", s3Store},
		{"mtls: two CNs (CN=torture-writer,CN=reader)", client(&twoCN), mtlsGW, "", s3Store},
		{"oidc: no token", client(nil), oidcGW, "", fileStore},
		{"oidc: read-only subject", client(nil), oidcGW, is.Token("repo:kiss/reader", aud, time.Hour), fileStore},
		{"oidc: expired token", client(nil), oidcGW, is.Token("repo:kiss/torture:ref:refs/heads/main", aud, -time.Minute), fileStore},
		{"oidc: wrong audience", client(nil), oidcGW, is.Token("repo:kiss/torture:ref:refs/heads/main", "other", time.Hour), fileStore},
		{"oidc: forged (unknown kid)", client(nil), oidcGW, is.Forged("attacker-key", "repo:kiss/torture:ref:refs/heads/main", aud), fileStore},
		{"oidc: forged (known kid, bad signature)", client(nil), oidcGW, is.Forged("test-key", "repo:kiss/torture:ref:refs/heads/main", aud), fileStore},
	}
	fetchesBefore := is.Fetches()
	for i := 0; time.Now().Before(tt.deadline) && ctx.Err() == nil; i++ {
		a := attempts[i%len(attempts)]
		evilPath := fmt.Sprintf("/nix/store/%s-evil-%d", strings.Repeat("0", 31)+"1", i)
		var req *http.Request
		switch (i / len(attempts)) % 4 {
		case 0: // a marker rooting whatever it likes
			key := fmt.Sprintf("gcroots/evil-%d", i)
			tt.evil.Store(key, true)
			req, _ = http.NewRequestWithContext(ctx, http.MethodPut, a.base+"/"+key, strings.NewReader(evilPath+"\n"))
		case 1: // a narinfo
			key := strings.Repeat("0", 31) + "1.narinfo"
			tt.evil.Store(key, true)
			req, _ = http.NewRequestWithContext(ctx, http.MethodPut, a.base+"/"+key, strings.NewReader("StorePath: "+evilPath+"\nURL: nar/x.nar\n"))
		case 2: // a fresh prune lease, to block every writer
			req, _ = http.NewRequestWithContext(ctx, http.MethodPut, a.base+"/gcroots/.lock/prune", strings.NewReader(`{"version":1,"kind":"prune","nonce":"evil"}`))
			req.Header.Set("If-None-Match", "*")
		case 3: // deleting a rooted path's narinfo
			a.store.mu.RLock()
			var victim string
			for _, top := range a.store.roots {
				victim = tt.closureOf(top)[0]
				break
			}
			a.store.mu.RUnlock()
			if victim == "" {
				victim = "nix-cache-info"
			}
			req, _ = http.NewRequestWithContext(ctx, http.MethodDelete, a.base+"/"+victim, nil)
		}
		if a.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+a.bearer)
		}
		resp, err := a.client.Do(req)
		tt.figs.inc("unauthorised attempts: " + a.who)
		switch {
		case err != nil && ctx.Err() == nil:
			tt.figs.inc("unauthorised attempts refused: " + a.who + " (TLS handshake refused)")
		case err != nil:
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			tt.figs.inc("unauthorised attempts refused: " + a.who + fmt.Sprintf(" (%d)", resp.StatusCode))
		default:
			t.Errorf("UNAUTHORISED WRITE: %s %s %s by %s: %s", req.Method, a.base, req.URL.Path, a.who, resp.Status)
			tt.unauth.Add(1)
		}
		if resp != nil {
			resp.Body.Close()
		}
		time.Sleep(150 * time.Millisecond)
	}
	// Forged tokens must not make the gateway hammer the issuer (issue 11
	// item 5): at most one refetch a minute, plus the hourly one.
	if f := is.Fetches() - fetchesBefore; f > 1+int64(time.Since(tt.deadline.Add(-tortureDuration(t))).Minutes()) {
		t.Errorf("forged tokens caused %d JWKS fetches", f)
	} else {
		tt.figs.add("JWKS fetches caused by forged tokens", f)
	}
}

// finalUnauthorisedCheck: no key an unauthorised client tried to write
// exists in any store.
func (tt *torture) finalUnauthorisedCheck(stores []*tortureStore) {
	for _, s := range stores {
		tt.evil.Range(func(k, _ any) bool {
			if _, err := s.st.Stat(e2eCtx(tt.t), k.(string)); err == nil {
				tt.t.Errorf("%s: UNAUTHORISED WRITE LANDED: %s", s.name, k)
				tt.unauth.Add(1)
			}
			return true
		})
	}
}

// uniqueTop is a closure built for one plain push.
type uniqueTop struct {
	path    string
	closure []string
}

func (tt *torture) closureOf(top string) []string {
	if c, ok := tt.closure[top]; ok {
		return c
	}
	u, _ := tt.unique.Load(top)
	return u.(uniqueTop).closure
}

func (tt *torture) outOf(top string) string {
	if p, ok := tt.out[top]; ok {
		return p
	}
	u, _ := tt.unique.Load(top)
	return u.(uniqueTop).path
}

// buildUnique builds a two-path closure no other push has (a dependency and
// a top, both new) and registers it.
func (tt *torture) buildUnique(ctx context.Context) (name, path string, err error) {
	i := tt.nUnique.Add(1)
	name = fmt.Sprintf("unique%d", i)
	expr := tt.n.Prelude() + fmt.Sprintf(`let dep = mk "u-dep%d" "echo dep%d-${nonce} > $out"; in mk "u-top%d" "mkdir $out; echo ${dep} > $out/dep"`, i, i, i)
	file := filepath.Join(tt.n.Dir, name+".nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		return "", "", err
	}
	out, code, err := runBounded(ctx, 2*time.Minute, tt.n.Env, "nix-build", "--no-out-link", file)
	if err != nil || code != 0 {
		return "", "", fmt.Errorf("nix-build %s: exit %d %v\n%s", name, code, err, out)
	}
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "/nix/store/") && strings.HasSuffix(f, fmt.Sprintf("-u-top%d", i)) {
			path = f
		}
	}
	if path == "" {
		return "", "", fmt.Errorf("nix-build %s printed no output path:\n%s", name, out)
	}
	cl, code, err := runBounded(ctx, time.Minute, tt.n.Env, "nix", "path-info", "-r", path)
	if err != nil || code != 0 {
		return "", "", fmt.Errorf("nix path-info %s: exit %d %v\n%s", path, code, err, cl)
	}
	var keys []string
	for _, p := range strings.Fields(cl) {
		keys = append(keys, testenv.StoreHash(p)+".narinfo")
	}
	tt.unique.Store(name, uniqueTop{path: path, closure: keys})
	return name, path, nil
}
