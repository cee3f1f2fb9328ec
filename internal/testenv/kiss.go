package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// goBuilds holds the binaries built by this test process, by package.
var goBuilds struct {
	mu     sync.Mutex
	dir    string
	byPkg  map[string]*goBuild
	swept  bool
	dirErr error
}

type goBuild struct {
	once sync.Once
	path string
	err  error
}

// ModuleRoot returns the repository root (the directory holding go.mod),
// found from this source file's location so tests in any package agree.
func ModuleRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("testenv: runtime.Caller failed")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// GoTool returns the go command used to build test binaries.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // not on PATH: the build fails and says so
}

// KissBinary builds ./cmd/kiss once per test process and returns the path
// of the binary. $KISS_BINARY, if set, is used instead (e.g. an installed
// release under test).
func KissBinary(t testing.TB) string {
	t.Helper()
	SkipShort(t, "a test of the built kiss binary")
	if p := os.Getenv("KISS_BINARY"); p != "" {
		return p
	}
	return BuildBinary(t, "./cmd/kiss", "kiss")
}

// BuildBinary builds the package pkg of this module (with build tags, if
// any) once per test process and returns the path of the binary, called
// name. Builds go to a per-process temp directory (kiss-testbin-<pid>-*: a
// test binary has no exit hook for cleanup), and directories of earlier
// test processes that are gone (or older than a day) are removed on the
// way. PID liveness is only a cleanup heuristic here, never a correctness
// decision.
func BuildBinary(t testing.TB, pkg, name string, tags ...string) string {
	t.Helper()
	SkipShort(t, "a test of a built binary ("+pkg+")")
	goBuilds.mu.Lock()
	if !goBuilds.swept {
		sweepOldBinDirs()
		goBuilds.dir, goBuilds.dirErr = os.MkdirTemp("", fmt.Sprintf("kiss-testbin-%d-", os.Getpid()))
		goBuilds.byPkg = map[string]*goBuild{}
		goBuilds.swept = true
	}
	dir, dirErr := goBuilds.dir, goBuilds.dirErr
	key := pkg + " " + strings.Join(tags, ",")
	b := goBuilds.byPkg[key]
	if b == nil {
		b = &goBuild{}
		goBuilds.byPkg[key] = b
	}
	goBuilds.mu.Unlock()
	if dirErr != nil {
		t.Fatalf("testenv: %v", dirErr)
	}
	b.once.Do(func() {
		out := filepath.Join(dir, name)
		args := []string{"build", "-o", out}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		cmd := exec.Command(GoTool(), append(args, pkg)...)
		cmd.Dir = ModuleRoot()
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("testenv: %v", b.err)
	}
	return b.path
}

func sweepOldBinDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), "kiss-testbin-*"))
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			continue
		}
		gone := false
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(m), "kiss-testbin-"), "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && pid > 0 && pid != os.Getpid() {
			gone = errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
		}
		if gone || time.Since(fi.ModTime()) > 24*time.Hour {
			_ = os.RemoveAll(m)
		}
	}
}

// KissResult is the outcome of one kiss invocation.
type KissResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// RunKiss runs the kiss binary with args and env (added to the current
// environment), logs the command and its output, and returns the result.
// A non-zero exit is not a test failure here: callers assert on ExitCode.
func RunKiss(t testing.TB, env []string, args ...string) KissResult {
	t.Helper()
	return RunKissIn(t, "", env, args...)
}

// RunKissIn is RunKiss in the working directory dir ("" = the test's).
func RunKissIn(t testing.TB, dir string, env []string, args ...string) KissResult {
	t.Helper()
	bin := KissBinary(t)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	res := KissResult{Stdout: so.String(), Stderr: se.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("testenv: run kiss %v: %v", args, err)
		}
		res.ExitCode = ee.ExitCode()
	}
	t.Logf("$ kiss %s  (exit %d)\n%s%s", strings.Join(args, " "), res.ExitCode, indent("stdout", res.Stdout), indent("stderr", res.Stderr))
	return res
}

func indent(label, s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	const limit = 8000
	if len(s) > limit {
		s = s[:limit/2] + "\n…[truncated]…\n" + s[len(s)-limit/2:]
	}
	return "  [" + label + "]\n    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
