package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
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
