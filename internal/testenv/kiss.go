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

var kissBuild struct {
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
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// KissBinary builds ./cmd/kiss once per test process and returns the path
// of the binary. $KISS_BINARY, if set, is used instead (e.g. an installed
// release under test). The build goes to a per-process temp directory
// (kiss-testbin-<pid>-*: a test binary has no exit hook for cleanup), and
// directories of earlier test processes that are gone (or older than a
// day) are removed on the way. PID liveness is only a cleanup heuristic
// here, never a correctness decision.
func KissBinary(t testing.TB) string {
	t.Helper()
	SkipShort(t, "a test of the built kiss binary")
	if p := os.Getenv("KISS_BINARY"); p != "" {
		return p
	}
	kissBuild.once.Do(func() {
		sweepOldBinDirs()
		dir, err := os.MkdirTemp("", fmt.Sprintf("kiss-testbin-%d-", os.Getpid()))
		if err != nil {
			kissBuild.err = err
			return
		}
		out := filepath.Join(dir, "kiss")
		cmd := exec.Command(GoTool(), "build", "-o", out, "./cmd/kiss")
		cmd.Dir = ModuleRoot()
		msg, err := cmd.CombinedOutput()
		if err != nil {
			kissBuild.err = fmt.Errorf("go build ./cmd/kiss: %v\n%s", err, msg)
			return
		}
		kissBuild.path = out
	})
	if kissBuild.err != nil {
		t.Fatalf("testenv: %v", kissBuild.err)
	}
	return kissBuild.path
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
	const max = 8000
	if len(s) > max {
		s = s[:max/2] + "\n…[truncated]…\n" + s[len(s)-max/2:]
	}
	return "  [" + label + "]\n    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
