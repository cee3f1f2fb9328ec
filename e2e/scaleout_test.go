package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

// TestScaleOut: several `kiss serve` over one versitygw bucket behind nginx
// (on 127.0.0.1) as a round-robin load balancer, writers pushing through it
// under writer leases (`kiss with-lock` against the balancer) while pruners
// run on the bucket directly. All coordination is in the bucket, so:
//
//   - every rooted closure is complete after each round and after a final
//     prune (S1/I1), whichever instance served which upload;
//   - while a prune lease is fresh, no instance grants a writer lease (503):
//     the lease is asked of each instance directly and through the
//     balancer;
//   - the balancer really spread the writes (nginx's log names the
//     upstreams).
func TestScaleOut(t *testing.T) {
	testenv.SkipShort(t, "starts versitygw, nginx and several kiss serve")
	ctx := e2eCtx(t)
	bk := testenv.VersitygwBucket(t)
	st := openStore(t, bk.URL)
	stage, script := writersScene(t, st)

	// N gateways over the one bucket, the same lease judging on each.
	const instances = 3
	var backends []string
	var upstream strings.Builder
	for range instances {
		u := startServe(t, bk.URL, "--anonymous-writes", "--prune-lease-ttl", "10s")
		backends = append(backends, u)
		fmt.Fprintf(&upstream, "    server %s max_fails=0;\n", strings.TrimPrefix(u, "http://"))
	}
	lbPort := testenv.FreePort(t)
	ng := testenv.Nginx(t, fmt.Sprintf(`
  upstream kiss { 
%s  }
  log_format up '$request_method $uri $status $upstream_addr';
  server {
    listen 127.0.0.1:%d;
    access_log {{PREFIX}}/logs/lb.log up;
    client_max_body_size 1g;
    location / {
      proxy_pass http://kiss;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_next_upstream off;
    }
  }`, upstream.String(), lbPort))
	lb := fmt.Sprintf("http://127.0.0.1:%d", lbPort)

	lockFlags := []string{"--lock-ttl", "10s", "--lock-wait", "90s"}
	const rounds, writers, prunes = 2, 6, 2
	for round := range rounds {
		dep := mkSynthPath(t, stage, fmt.Sprintf("dep-r%d", round))
		putSynth(t, st, dep) // present, unrooted: garbage until a writer's marker lands
		waitStoreClockPast(t, st)
		rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		var wg sync.WaitGroup
		roots := make([]*synthPath, writers)
		codes := make([]int, writers)
		outs := make([]string, writers)
		for i := range writers {
			roots[i] = mkSynthPath(t, stage, fmt.Sprintf("root-r%d-w%d", round, i), dep)
			wg.Go(func() {
				r := roots[i]
				env := []string{"STAGE=" + stage, fmt.Sprintf("PAUSE=0.%d", 1+i%5),
					"DEP_NAR=" + dep.NarKey, "DEP_NAR_FILE=" + dep.narFile, "DEP_INFO=" + dep.InfoKey, "DEP_INFO_FILE=" + dep.infoFile,
					"ROOT_NAR=" + r.NarKey, "ROOT_NAR_FILE=" + r.narFile, "ROOT_INFO=" + r.InfoKey, "ROOT_INFO_FILE=" + r.infoFile}
				time.Sleep(time.Duration(i) * 100 * time.Millisecond)
				args := append([]string{"with-lock", lb + fmt.Sprintf("/gcroots/w%d", i), r.StorePath}, lockFlags...)
				cmd := kissCmd(rctx, t, env, append(args, "--", "sh", script)...)
				out, _ := cmd.CombinedOutput()
				codes[i], outs[i] = cmd.ProcessState.ExitCode(), string(out)
			})
		}
		pruneCodes := make([]int, prunes)
		for j := range prunes {
			wg.Go(func() {
				time.Sleep(time.Duration(j)*500*time.Millisecond + 200*time.Millisecond)
				args := append(append([]string{"prune", "--grace", "0s"}, lockFlags...), bk.URL)
				cmd := kissCmd(rctx, t, nil, args...)
				out, _ := cmd.CombinedOutput()
				pruneCodes[j] = cmd.ProcessState.ExitCode()
				if pruneCodes[j] != 0 {
					t.Logf("prune %d:\n%s", j, out)
				}
			})
		}
		wg.Wait()
		cancel()
		for i, c := range codes {
			if c != 0 {
				t.Errorf("round %d: writer %d exited %d:\n%s", round, i, c, outs[i])
			}
		}
		for j, c := range pruneCodes {
			if c != 0 {
				t.Errorf("round %d: prune %d exited %d", round, j, c)
			}
		}
		for i := range writers {
			requireClosure(t, st, fmt.Sprintf("gcroots/w%d", i), roots[i], dep)
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	// No writer lease while a prune lease is fresh, from any instance.
	lease, err := lockproto.AcquirePrune(ctx, st, lockproto.Options{TTL: 10 * time.Second, Owner: "scale-out test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range append(backends, lb, lb, lb) {
		gw := openGateway(t, u)
		_, err := lockproto.AcquireWriter(ctx, gw, "probe", lockproto.Options{TTL: 10 * time.Second, Wait: 0, Owner: "probe"})
		var re *httpstore.RemoteError
		if err == nil || !lockproto.IsLocked(err) && !(errors.As(err, &re) && re.PruneInProgress()) {
			t.Errorf("%s granted a writer lease (or failed otherwise) while a prune lease is fresh: %v", u, err)
		}
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	gw := openGateway(t, lb)
	wl, err := lockproto.AcquireWriter(ctx, gw, "probe", lockproto.Options{TTL: 10 * time.Second, Wait: 30 * time.Second, Owner: "probe"})
	if err != nil {
		t.Fatalf("no writer lease after the prune lease was released: %v", err)
	}
	wl.Release(ctx)

	// The final prune keeps every closure.
	if res := testenv.RunKiss(t, nil, "prune", "--grace", "0s", bk.URL); res.ExitCode != 0 {
		t.Fatalf("final prune exited %d", res.ExitCode)
	}
	checkAllClosures(t, st)

	// The balancer spread the uploads.
	logData, err := os.ReadFile(filepath.Join(ng.Prefix, "logs", "lb.log"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^PUT \S+ 20\d (\S+)$`).FindAllStringSubmatch(string(logData), -1) {
		used[m[1]]++
	}
	if len(used) < 2 {
		t.Errorf("writes went to %d upstream(s) (%v): the balancer did not spread them", len(used), used)
	}
	t.Logf("writes per instance: %v", used)
}

// checkAllClosures asserts I1 over the whole store: every narinfo a marker
// reaches has its NAR and references.
func checkAllClosures(t *testing.T, st storage.Store) {
	t.Helper()
	res := testenv.RunKiss(t, nil, "verify", "--json", st.URL())
	if res.ExitCode != 0 {
		t.Errorf("kiss verify exited %d:\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

// writersScene prepares a cache for concurrent writers and pruners: its
// nix-cache-info, a permanent root (so a prune never runs on empty roots),
// and the upload script the writers run under with-lock, in a stage
// directory it returns with the script's path.
func writersScene(t *testing.T, st storage.Store) (stage, script string) {
	t.Helper()
	ctx := e2eCtx(t)
	if _, err := st.Put(ctx, "nix-cache-info", strings.NewReader("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	stage = t.TempDir()
	script = filepath.Join(stage, "upload.sh")
	if err := os.WriteFile(script, []byte(uploadScript), 0o755); err != nil {
		t.Fatal(err)
	}
	base := mkSynthPath(t, stage, "base")
	putSynth(t, st, base)
	if _, err := st.Put(ctx, "gcroots/base", strings.NewReader(base.StorePath+"\n"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return stage, script
}

// openGateway opens a kiss serve as a store (the http client store).
func openGateway(t *testing.T, u string) storage.Store {
	t.Helper()
	c, err := httpstore.Open(u, httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
