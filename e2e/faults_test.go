package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/reliability"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// waitFile waits (bounded) until path holds something and returns it.
func waitFile(t *testing.T, path string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not written within %v", path, within)
	return ""
}

// alive reports whether pid exists (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// A `kiss with-lock` killed with SIGKILL must not leave its COMMAND
// running: on file:// that command would go on writing into the cache
// without a lease (the lease is no longer refreshed; a grace-0 prune may
// then delete the NAR of a narinfo it is about to write, I2). with-lock
// asks the kernel to kill its direct child when it dies (PR_SET_PDEATHSIG).
func TestFaultWithLockKilledTakesItsCommand(t *testing.T) {
	testenv.SkipShort(t, "runs the kiss binary")
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cache, "gcroots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "child.pid")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.KissBinary(t), "with-lock", filepath.Join(cache, "gcroots/w"),
		"/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a", "--",
		"sh", "-c", `echo $$ > "$1"; exec sleep 300`, "_", pidFile)
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(waitFile(t, pidFile, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if !alive(child) {
		t.Fatalf("the command (pid %d) is not running", child)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) {
		t.Fatalf("with-lock after SIGKILL: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(child) {
		t.Fatalf("with-lock was killed, its command (pid %d) still runs: on file:// it would write without a lease", child)
	}
	if _, err := os.Stat(filepath.Join(cache, "gcroots/w")); err == nil {
		t.Fatal("a marker was written by a killed with-lock")
	}
}

// faultFigures records a fault test's figures for docs/reliability.md.
func faultFigures(t *testing.T, variant string, start time.Time, tried, held map[string]int64, lost int64) {
	t.Helper()
	if err := reliability.Record(os.Getenv(reliability.EnvDir), reliability.Result{
		Suite: "faults", Variant: variant, Test: t.Name(),
		Command: "go test -run '^" + t.Name() + "$' -v ./e2e/",
		Tried:   tried, Held: held, Lost: lost, Seconds: time.Since(start).Seconds(), Passed: !t.Failed(),
	}); err != nil {
		t.Error(err)
	}
}

// faultyBucket is a fresh versitygw bucket behind an S3 fault proxy: the
// store URL through the proxy, and a direct store to check it.
func faultyBucket(t *testing.T, seed uint64) (*storagetest.FaultProxy, string, storage.Store) {
	t.Helper()
	b := testenv.VersitygwBucket(t)
	p, u := storagetest.ProxyBucket(t, b.Server.Endpoint, b.URL, seed)
	return p, u, openStore(t, b.URL)
}

// TestFaultS3ProxyWritersAndPruners: with-lock writers and grace-0 pruners
// through an S3 proxy that fails, resets, delays, and drops answers after
// the server applied the request. Commands may fail (transient errors that
// outlast their retries); no rooted closure may ever be incomplete.
func TestFaultS3ProxyWritersAndPruners(t *testing.T) {
	testenv.SkipShort(t, "versitygw and the kiss binary")
	start := time.Now()
	p, proxied, st := faultyBucket(t, 11)
	ctx := e2eCtx(t)
	if _, err := st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	stage := t.TempDir()
	script := filepath.Join(stage, "upload.sh")
	if err := os.WriteFile(script, []byte(uploadScript), 0o755); err != nil {
		t.Fatal(err)
	}
	base := mkSynthPath(t, stage, "fault-base")
	putSynth(t, st, base)
	if _, err := st.Put(ctx, "gcroots/base", strings.NewReader(base.StorePath+"\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []storagetest.ProxyFault{
		{Times: -1, Prob: 0.08, Status: 503},
		{Times: -1, Prob: 0.04, Reset: true},
		{Times: -1, Prob: 0.05, Delay: 300 * time.Millisecond},
		{Op: storagetest.S3PutObject, Times: -1, Prob: 0.05, Applied: true, Reset: true},
		{Op: storagetest.S3DeleteObjects, Times: -1, Prob: 0.2, Applied: true, Status: 500},
		{Op: storagetest.S3DeleteObject, Times: -1, Prob: 0.1, Applied: true, Reset: true},
	} {
		p.Inject(f)
	}
	tried, held := map[string]int64{}, map[string]int64{}
	var mu sync.Mutex
	count := func(m map[string]int64, k string) { mu.Lock(); m[k]++; mu.Unlock() }
	const rounds, writers, prunes = 3, 3, 2
	lockFlags := []string{"--lock-ttl", "6s", "--lock-wait", "60s"}
	rooted := map[string][2]*synthPath{}
	for round := range rounds {
		dep := mkSynthPath(t, stage, fmt.Sprintf("fault-dep-r%d", round))
		putSynth(t, st, dep)
		waitStoreClockPast(t, st)
		var wg sync.WaitGroup
		for i := range writers {
			root := mkSynthPath(t, stage, fmt.Sprintf("fault-root-r%d-w%d", round, i), dep)
			marker := fmt.Sprintf("w%d-r%d", i, round)
			wg.Go(func() {
				env := append(os.Environ(), "STAGE="+stage, "PAUSE=0.2",
					"DEP_NAR="+dep.NarKey, "DEP_NAR_FILE="+dep.narFile, "DEP_INFO="+dep.InfoKey, "DEP_INFO_FILE="+dep.infoFile,
					"ROOT_NAR="+root.NarKey, "ROOT_NAR_FILE="+root.narFile, "ROOT_INFO="+root.InfoKey, "ROOT_INFO_FILE="+root.infoFile)
				args := append([]string{"with-lock", markerURL(proxied, marker), root.StorePath}, lockFlags...)
				out, code, err := runBounded(ctx, 3*time.Minute, env, testenv.KissBinary(t), append(args, "--", "sh", script)...)
				count(tried, "with-lock writers")
				switch {
				case err != nil:
					t.Errorf("writer: %v\n%s", err, out)
				case code == 0:
					count(held, "writers that finished (marker written)")
					mu.Lock()
					rooted["gcroots/"+marker] = [2]*synthPath{root, dep}
					mu.Unlock()
				default:
					// kiss's own failure (3, 5, 6, 7) or the upload's (curl's
					// 22 for an HTTP error through the faults): either way
					// no marker may exist.
					if _, err := st.Stat(ctx, "gcroots/"+marker); err == nil {
						t.Errorf("writer exit %d, yet its marker was written\n%s", code, out)
					}
					count(held, fmt.Sprintf("writers that failed without a marker (exit %d)", code))
				}
			})
		}
		for j := range prunes {
			wg.Go(func() {
				time.Sleep(time.Duration(j) * 300 * time.Millisecond)
				out, code, err := runBounded(ctx, 3*time.Minute, os.Environ(), testenv.KissBinary(t),
					append(append([]string{"prune", "--grace", "0s"}, lockFlags...), proxied)...)
				count(tried, "prunes")
				switch {
				case err != nil:
					t.Errorf("prune: %v\n%s", err, out)
				case code == 0:
					count(held, "prunes that finished")
				case code == 3 || code == 4 || code == 5 || code == 6:
					// 4: the roots could not be listed through the faults:
					// fail closed, nothing deleted.
					count(held, fmt.Sprintf("prunes that stopped cleanly (exit %d)", code))
				default:
					t.Errorf("prune exit %d\n%s", code, out)
				}
			})
		}
		wg.Wait()
		for marker, rd := range rooted {
			if !requireClosure(t, st, marker, rd[0], rd[1]) {
				tried["lost"]++
			}
		}
		if t.Failed() {
			break
		}
	}
	for k, v := range p.Faults() {
		tried["faults injected: "+k] = int64(v)
	}
	tried["S3 requests through the proxy"] = int64(p.Requests(""))
	// Faults off: one more prune finishes the job and keeps every root.
	p.Reset()
	waitStoreClockPast(t, st)
	if out, code, err := runBounded(ctx, 3*time.Minute, os.Environ(), testenv.KissBinary(t), "prune", "--grace", "0s", "--lock-wait", "60s", proxied); err != nil || code != 0 {
		t.Errorf("final prune: exit %d %v\n%s", code, err, out)
	}
	for marker, rd := range rooted {
		requireClosure(t, st, marker, rd[0], rd[1])
	}
	held["rooted closures complete after every round"] = int64(len(rooted))
	t.Logf("faults: tried %v held %v", tried, held)
	faultFigures(t, "s3 fault proxy", start, tried, held, tried["lost"])
}

// TestFaultPrunerKilledMidDelete: the pruner is held at a delete batch by
// the proxy and killed with SIGKILL there — while its metadata batch is in
// flight, then while its NAR batch is. Whatever it did, no narinfo is left
// without its NAR (I2), roots are intact, and the next prune takes the
// stale lease over and finishes.
func TestFaultPrunerKilledMidDelete(t *testing.T) {
	testenv.SkipShort(t, "versitygw and the kiss binary")
	start := time.Now()
	tried, held := map[string]int64{}, map[string]int64{}
	for point, nth := range map[string]int{"metadata batch in flight": 1, "NAR batch in flight": 2} {
		p, proxied, st := faultyBucket(t, 12)
		ctx := e2eCtx(t)
		stage := t.TempDir()
		if _, err := st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		root := mkSynthPath(t, stage, "kill-root")
		putSynth(t, st, root)
		if _, err := st.Put(ctx, "gcroots/root", strings.NewReader(root.StorePath+"\n"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		var garbage []*synthPath
		for i := range 5 {
			g := mkSynthPath(t, stage, fmt.Sprintf("kill-garbage-%d", i))
			putSynth(t, st, g)
			garbage = append(garbage, g)
		}
		waitStoreClockPast(t, st)
		// The first (or second) DeleteObjects is answered only after a
		// minute; the pruner is killed while it waits.
		p.Inject(storagetest.ProxyFault{Op: storagetest.S3DeleteObjects, Nth: nth, Delay: time.Minute})
		cmd := exec.Command(testenv.KissBinary(t), "prune", "--grace", "0s", "--lock-ttl", "3s", "--no-memo", proxied)
		cmd.Env = os.Environ()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for p.Faults()["delay"] == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if p.Faults()["delay"] == 0 {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("%s: the pruner never reached the held batch", point)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		tried["pruners killed: "+point]++
		// I2 and the root, right after the kill.
		for _, g := range garbage {
			if _, err := st.Stat(ctx, g.InfoKey); err == nil {
				if _, err := st.Stat(ctx, g.NarKey); err != nil {
					t.Errorf("%s: I2 violated: %s without its NAR", point, g.InfoKey)
				}
			}
		}
		requireClosure(t, st, "gcroots/root", root, root)
		// The next prune takes the stale lease over (TTL 3 s) and finishes.
		p.Reset()
		time.Sleep(4 * time.Second)
		waitStoreClockPast(t, st)
		out, code, err := runBounded(ctx, 2*time.Minute, os.Environ(), testenv.KissBinary(t), "prune", "--grace", "0s", "--lock-ttl", "3s", "--lock-wait", "30s", proxied)
		if err != nil || code != 0 {
			t.Fatalf("%s: the next prune: exit %d %v\n%s", point, code, err, out)
		}
		for _, g := range garbage {
			if _, err := st.Stat(ctx, g.InfoKey); err == nil {
				t.Errorf("%s: %s survived the next prune", point, g.InfoKey)
			}
		}
		requireClosure(t, st, "gcroots/root", root, root)
		held["next prune took the stale lease over and finished: "+point]++
	}
	faultFigures(t, "pruner killed mid-delete", start, tried, held, 0)
}

// TestFaultFullDisk: a full filesystem (a small tmpfs) under with-lock and
// prune on file://. Every command fails cleanly or does its job; none
// leaves a marker for a push that did not finish, and nothing rooted goes.
func TestFaultFullDisk(t *testing.T) {
	start := time.Now()
	mnt := testenv.SmallTmpfs(t, 2<<20)
	dir := filepath.Join(mnt, "cache")
	st, err := storage.OpenFile(dir, storage.CreateDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := e2eCtx(t)
	if _, err := st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	stage := t.TempDir()
	root := mkSynthPath(t, stage, "full-root")
	putSynth(t, st, root)
	if _, err := st.Put(ctx, "gcroots/root", strings.NewReader(root.StorePath+"\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var garbage []*synthPath
	for i := range 3 {
		g := mkSynthPath(t, stage, fmt.Sprintf("full-garbage-%d", i))
		putSynth(t, st, g)
		garbage = append(garbage, g)
	}
	old := time.Now().Add(-3 * time.Hour)
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	tried, held := map[string]int64{}, map[string]int64{}

	// 1. Not a byte free: with-lock cannot take its lease: exit 3, COMMAND
	// never ran, no marker.
	filler := testenv.FillTmpfs(t, mnt, 0)
	ran := filepath.Join(stage, "ran")
	res := testenv.RunKiss(t, nil, "with-lock", filepath.Join(dir, "gcroots/new"), root.StorePath, "--", "touch", ran)
	tried["with-lock on a full disk"]++
	if res.ExitCode != 3 || fileExistsE2E(ran) || fileExistsE2E(filepath.Join(dir, "gcroots/new")) {
		t.Errorf("with-lock on a full disk: exit %d (want 3), command ran %v", res.ExitCode, fileExistsE2E(ran))
	} else {
		held["with-lock refused cleanly (exit 3, no command, no marker)"]++
	}
	// 2. A prune on the full disk cannot take its lease: a clear failure,
	// nothing deleted.
	res = testenv.RunKiss(t, nil, "prune", "--grace", "0s", "file://"+dir)
	tried["prune on a full disk"]++
	if res.ExitCode == 0 || !strings.Contains(res.Stderr+res.Stdout, "no space left") {
		t.Errorf("prune on a full disk: exit %d, want a failure naming the full disk", res.ExitCode)
	} else {
		held["prune refused cleanly, saying the disk is full"]++
	}
	for _, g := range garbage {
		if _, err := st.Stat(ctx, g.InfoKey); err != nil {
			t.Errorf("a prune that could not take its lease deleted %s", g.InfoKey)
		}
	}
	// 3. Room for the lease, not for the memo: the prune frees space, says
	// it could not save the memo, and keeps every root.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testenv.FillTmpfs(t, mnt, 16<<10)
	res = testenv.RunKiss(t, nil, "prune", "--grace", "0s", "file://"+dir)
	tried["prune with room for its lease only"]++
	if res.ExitCode != 0 {
		t.Errorf("prune with a nearly full disk: exit %d", res.ExitCode)
	} else {
		held["prune freed space on a nearly full disk"]++
	}
	for _, g := range garbage {
		if _, err := st.Stat(ctx, g.InfoKey); err == nil {
			t.Errorf("%s survived", g.InfoKey)
		}
	}
	requireClosure(t, st, "gcroots/root", root, root)
	faultFigures(t, "full filesystem (tmpfs)", start, tried, held, 0)
}

func fileExistsE2E(p string) bool { _, err := os.Stat(p); return err == nil }
