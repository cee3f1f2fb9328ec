package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// clockSkewWriter is the COMMAND of the with-lock writer in
// TestFaultHostClockOffByHours: it says it runs, waits (bounded) to be
// released, then uploads its root through $KISS_STORE, NAR first.
const clockSkewWriter = `set -eu
touch "$STAGE/started"
i=0
while [ ! -e "$STAGE/release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
[ -e "$STAGE/release" ]
curl -fsS -X PUT -H "Content-Type: application/x-nix-nar" --data-binary "@$ROOT_NAR_FILE" "$KISS_STORE/$ROOT_NAR" >/dev/null
curl -fsS -X PUT -H "Content-Type: text/x-nix-narinfo" --data-binary "@$ROOT_INFO_FILE" "$KISS_STORE/$ROOT_INFO" >/dev/null
`

// TestFaultHostClockOffByHours runs the kiss binary against versitygw
// through a proxy that shifts every time the store reports by +3h (to kiss:
// its host clock 3h behind the store's) and by -3h (the host 3h ahead).
// kiss judges every age on the store's clock (I6), so nothing changes:
//
//	(a) an unrooted path pushed just now survives `prune --grace 1h`, and
//	    one 2h old (its mtime set on the server's disk) does not;
//	(b) a writer's lease under a running `kiss with-lock` is fresh to a
//	    concurrent `prune --lock-wait 3s` (exit 5, nothing deleted), and
//	    the writer then finishes and writes its marker;
//	(c) a `--grace 0s` prune deletes the garbage and keeps every rooted
//	    closure;
//	(d) `kiss storage check` fails the clock-skew guarantee (exit 3)
//	    naming a skew of about 3h.
//
// Judged on the host clock instead, (a) deletes the fresh path (host
// ahead) or keeps the old one (host behind), and (b) takes the writer's
// lease over as 3h stale (host ahead).
func TestFaultHostClockOffByHours(t *testing.T) {
	testenv.SkipShort(t, "versitygw and the kiss binary")
	start := time.Now()
	tried, held := map[string]int64{}, map[string]int64{}
	var lost int64
	for _, by := range []time.Duration{3 * time.Hour, -3 * time.Hour} {
		host := "host 3h behind its store (store clock +3h)"
		if by < 0 {
			host = "host 3h ahead of its store (store clock -3h)"
		}
		t.Run(by.String(), func(t *testing.T) {
			lost += hostClockOff(t, by, host, tried, held)
		})
	}
	faultFigures(t, "host clock off by hours", start, tried, held, lost)
}

func hostClockOff(t *testing.T, by time.Duration, host string, tried, held map[string]int64) (lost int64) {
	b := testenv.VersitygwBucket(t)
	p, proxied := storagetest.ProxyBucket(t, b.Server.Endpoint, b.URL, 21)
	p.ShiftClock(storagetest.ClockShift{By: by, AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey})
	st := openStore(t, b.URL) // direct: the server's own, unshifted view
	ctx := e2eCtx(t)
	kiss := testenv.KissBinary(t)
	if _, err := st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	stage := t.TempDir()
	dep := mkSynthPath(t, stage, "skew-dep")
	root := mkSynthPath(t, stage, "skew-root", dep)
	putSynth(t, st, dep)
	putSynth(t, st, root)
	if _, err := st.Put(ctx, "gcroots/keep", strings.NewReader(root.StorePath+"\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	old := mkSynthPath(t, stage, "skew-old-garbage")
	putSynth(t, st, old)
	// Everything so far is 2h old on the server's disk (versitygw's
	// LastModified is the file's mtime).
	twoHoursAgo := time.Now().Add(-2 * time.Hour)
	for _, k := range []string{"nix-cache-info", "gcroots/keep", dep.InfoKey, dep.NarKey, root.InfoKey, root.NarKey, old.InfoKey, old.NarKey} {
		if err := os.Chtimes(filepath.Join(b.Dir, k), twoHoursAgo, twoHoursAgo); err != nil {
			t.Fatal(err)
		}
		if o, err := st.Stat(ctx, k); err != nil || time.Since(o.ModTime) < 90*time.Minute {
			t.Fatalf("%s: could not age it on the server (mtime %v, %v)", k, o.ModTime, err)
		}
	}
	fresh := mkSynthPath(t, stage, "skew-fresh-garbage")
	putSynth(t, st, fresh)
	present := func(p *synthPath) bool {
		_, e1 := st.Stat(ctx, p.InfoKey)
		_, e2 := st.Stat(ctx, p.NarKey)
		return e1 == nil && e2 == nil
	}
	gone := func(p *synthPath) bool {
		_, e1 := st.Stat(ctx, p.InfoKey)
		_, e2 := st.Stat(ctx, p.NarKey)
		return e1 != nil && e2 != nil
	}
	run := func(timeout time.Duration, env []string, args ...string) (string, int) {
		t.Helper()
		out, code, err := runBounded(ctx, timeout, append(os.Environ(), env...), kiss, args...)
		if err != nil {
			t.Fatalf("kiss %v: %v\n%s", args, err, out)
		}
		t.Logf("$ kiss %s  (exit %d)\n%s", strings.Join(args, " "), code, out)
		return out, code
	}

	// (d) storage check names the skew.
	out, code := run(3*time.Minute, nil, "--json", "storage", "check", proxied)
	tried["storage checks: "+host]++
	var rep struct {
		Skew   time.Duration `json:"skew_ns"`
		Failed []string      `json:"failed"`
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndexByte(out, '}')+1]), &rep); err != nil {
		t.Fatalf("storage check --json: %v\n%s", err, out)
	}
	if d := rep.Skew - by; code != 3 || !slices.Contains(rep.Failed, storage.GuaranteeClockSkew) || d < -time.Minute || d > time.Minute {
		t.Errorf("storage check: exit %d (want 3), failed %v (want %s), skew %v (want about %v)", code, rep.Failed, storage.GuaranteeClockSkew, rep.Skew, by)
	} else {
		held[fmt.Sprintf("storage check failed the clock-skew guarantee, skew %+.1fh (exit 3): %s", rep.Skew.Hours(), host)]++
	}

	// (a) grace 1h keeps the path pushed just now, deletes the 2h-old one.
	_, code = run(3*time.Minute, nil, "prune", "--grace", "1h", "--lock-wait", "30s", proxied)
	tried["prunes --grace 1h: "+host]++
	switch {
	case code != 0:
		t.Errorf("prune --grace 1h: exit %d", code)
	case !present(fresh):
		t.Errorf("prune --grace 1h deleted (part of) %s, pushed moments ago: ages judged on the host clock?", fresh.StorePath)
	case !gone(old):
		t.Errorf("prune --grace 1h kept (part of) %s, 2h old on the store: ages judged on the host clock?", old.StorePath)
	default:
		held["grace 1h kept the path pushed just now and deleted the 2h-old one: "+host]++
	}

	// (b) a writer holds its lease under with-lock; a prune sees it fresh.
	writer := mkSynthPath(t, stage, "skew-writer", dep)
	script := filepath.Join(stage, "writer.sh")
	if err := os.WriteFile(script, []byte(clockSkewWriter), 0o755); err != nil {
		t.Fatal(err)
	}
	wcmd := exec.CommandContext(ctx, kiss, "with-lock", markerURL(proxied, "writer"), writer.StorePath,
		"--lock-ttl", "30s", "--lock-wait", "60s", "--", "sh", script)
	wcmd.Env = append(os.Environ(), "STAGE="+stage,
		"ROOT_NAR="+writer.NarKey, "ROOT_NAR_FILE="+writer.narFile, "ROOT_INFO="+writer.InfoKey, "ROOT_INFO_FILE="+writer.infoFile)
	var wout strings.Builder
	wcmd.Stdout, wcmd.Stderr = &wout, &wout
	wcmd.WaitDelay = 10 * time.Second
	if err := wcmd.Start(); err != nil {
		t.Fatal(err)
	}
	wdone := make(chan error, 1)
	go func() { wdone <- wcmd.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); !fileExistsE2E(filepath.Join(stage, "started")); {
		select {
		case err := <-wdone:
			t.Fatalf("with-lock ended (%v) before its command started\n%s", err, wout.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("with-lock's command did not start within 60s\n%s", wout.String())
		}
	}
	tried["with-lock writers: "+host]++
	garbage := []*synthPath{fresh}
	for i := range 2 {
		g := mkSynthPath(t, stage, fmt.Sprintf("skew-garbage-%d", i))
		putSynth(t, st, g)
		garbage = append(garbage, g)
	}
	waitStoreClockPast(t, st)
	lockedAt := time.Now()
	out, code = run(time.Minute, nil, "prune", "--grace", "0s", "--lock-wait", "3s", proxied)
	tried["prunes --lock-wait 3s against a running writer: "+host]++
	waited := time.Since(lockedAt)
	deleted := 0
	for _, g := range garbage {
		if !present(g) {
			deleted++
		}
	}
	if code != 5 || deleted > 0 {
		t.Errorf("prune while a writer holds its lease: exit %d (want 5, locked), %d garbage paths touched (want 0), after %v: the lease judged stale on the host clock?\n%s",
			code, deleted, waited.Round(time.Millisecond), out)
	} else {
		held["prune saw the writer's lease fresh (exit 5, nothing deleted): "+host]++
	}
	if err := os.WriteFile(filepath.Join(stage, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-wdone; err != nil {
		t.Errorf("with-lock writer: %v\n%s", err, wout.String())
	} else if requireClosure(t, st, "gcroots/writer", writer, dep) {
		held["with-lock writers finished and wrote their marker: "+host]++
	}

	// (c) grace 0: the garbage goes, every rooted closure stays.
	waitStoreClockPast(t, st)
	_, code = run(3*time.Minute, nil, "prune", "--grace", "0s", "--lock-wait", "30s", proxied)
	tried["prunes --grace 0s: "+host]++
	if code != 0 {
		t.Errorf("prune --grace 0s: exit %d", code)
	}
	for _, g := range garbage {
		if !gone(g) {
			t.Errorf("prune --grace 0s kept (part of) unrooted %s", g.StorePath)
		}
	}
	for marker, rd := range map[string][2]*synthPath{"gcroots/keep": {root, dep}, "gcroots/writer": {writer, dep}} {
		tried["rooted closures checked: "+host]++
		if requireClosure(t, st, marker, rd[0], rd[1]) {
			held["rooted closures complete after the grace-0 prune: "+host]++
		} else {
			lost++
		}
	}
	tried["requests refused as too skewed (each kiss process's first; the SDK then corrected): "+host] = int64(p.Faults()["request-time-too-skewed"])
	tried["S3 requests through the clock-shifting proxy: "+host] = int64(p.Requests(""))
	return lost
}
