package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requireComponent reports a missing component: t.Fatal when CI or one of
// the named environment variables is set (so CI never passes by skipping),
// t.Skip otherwise.
func requireComponent(t testing.TB, what string, err error, envs ...string) {
	t.Helper()
	for _, e := range append([]string{"CI"}, envs...) {
		if v := os.Getenv(e); v != "" && v != "0" && v != "false" {
			t.Fatalf("testenv: %s is required (%s=%s) but unavailable: %v", what, e, v, err)
		}
	}
	t.Skipf("testenv: SKIPPING: %s unavailable: %v (set CI=1 to make this fatal)", what, err)
}

// SkipShort skips t under `go test -short`: the inner loop runs no real
// component (nix, nginx, versitygw, spin, a kiss binary build) and no long
// run. The full suite (scripts/test.sh, CI) runs without -short, so nothing
// is skipped there. Every component starter of this package calls it;
// tests that are slow on their own call it with a reason.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("testenv: -short: skipping %s (the full suite runs it)", what)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// kernel hands out ports from an ephemeral range, so a collision with
// another test between this call and the server's bind is unlikely but not
// impossible; servers that can bind :0 themselves should do so instead.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitTCP waits until addr accepts a TCP connection or the timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logWriter forwards a process's output to the test log, line by line, and
// drops output once the test has finished (t.Log would panic then).
type logWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
	closed bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // incomplete: keep for later
			break
		}
		w.t.Log(w.prefix + strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

func (w *logWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 && !w.closed {
		w.t.Log(w.prefix + w.buf.String())
	}
	w.closed = true
}

// Process is a background process started by a test.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	PID  int

	done    chan struct{}
	waitErr error
	log     *logWriter
}

// StartProcess starts cmd in its own process group with its output in the
// test log, and stops it by PID in t.Cleanup (SIGTERM, then SIGKILL after
// five seconds). cmd.Stdout/Stderr, if already set, are kept.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	lw := &logWriter{t: t, prefix: name + ": "}
	if cmd.Stdout == nil {
		cmd.Stdout = lw
	}
	if cmd.Stderr == nil {
		cmd.Stderr = lw
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s (%s): %v", name, cmd.Path, err)
	}
	p := &Process{Name: name, Cmd: cmd, PID: cmd.Process.Pid, done: make(chan struct{}), log: lw}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Logf("testenv: started %s pid %d: %s", name, p.PID, strings.Join(cmd.Args, " "))
	t.Cleanup(func() {
		if err := p.Stop(5 * time.Second); err != nil {
			t.Logf("testenv: stop %s: %v", name, err)
		}
		lw.close()
	})
	return p
}

// Exited reports whether the process has ended, and its Wait error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process (by PID) if it is still running.
func (p *Process) Signal(sig syscall.Signal) error {
	if ok, _ := p.Exited(); ok {
		return nil
	}
	return syscall.Kill(p.PID, sig)
}

// Stop sends SIGTERM to the process (by PID) and waits up to grace before
// SIGKILL. Stopping an exited process is a no-op.
func (p *Process) Stop(grace time.Duration) error {
	if ok, _ := p.Exited(); ok {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s pid %d needed SIGKILL", p.Name, p.PID)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s pid %d did not exit after SIGKILL", p.Name, p.PID)
	}
}
