package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/storage"
)

// roots add maps publish.Root's failures to the documented exit codes, and
// refuses what the pruner would not read before taking a lease.
func TestRootsAddExitCodes(t *testing.T) {
	dir := t.TempDir()
	live := "/nix/store/" + strings.Repeat("a", 32) + "-live"
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{dir, "team/.x", live}, ExitUsage},                // the pruner skips dot segments
		{[]string{dir, "web~3", live}, ExitUsage},                  // a generation's name
		{[]string{dir, "web", strings.Repeat("a", 32)}, ExitUsage}, // a bare hash is no store path
		{[]string{dir, "web", "/gnu/store/" + strings.Repeat("a", 32) + "-x"}, ExitUsage},
		{[]string{"--keep", "-1", dir, "web", live}, ExitUsage},
		{[]string{dir, "web", live}, ExitOK},
	} {
		if code, _, stderr := runKiss(t, append([]string{"roots", "add"}, c.args...)...); code != c.want {
			t.Errorf("roots add %v: exit %d, want %d: %s", c.args, code, c.want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "gcroots", "web")); err != nil {
		t.Fatalf("marker not written: %v", err)
	}
	ran := filepath.Join(dir, "ran")
	if code, _, stderr := runKiss(t, "with-lock", filepath.Join(dir, "gcroots", "web~3"), live, "--", "touch", ran); code != ExitUsage {
		t.Errorf("with-lock to a generation's name: exit %d, want %d: %s", code, ExitUsage, stderr)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("with-lock ran its command for a marker it cannot write")
	}

	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := lockproto.AcquirePrune(context.Background(), st, lockproto.Options{TTL: time.Minute, Owner: "cmd-test-pruner", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(context.Background())
	if code, _, stderr := runKiss(t, "roots", "add", "--lock-wait", "0s", dir, "other", live); code != ExitLocked || !strings.Contains(stderr, "cmd-test-pruner") {
		t.Fatalf("roots add while a prune holds the lock: exit %d, want %d naming the pruner: %s", code, ExitLocked, stderr)
	}
	if code, _, stderr := runKiss(t, "with-lock", "--lock-wait", "0s", filepath.Join(dir, "gcroots", "other"), live, "--", "true"); code != ExitLocked || !strings.Contains(stderr, "cmd-test-pruner") {
		t.Fatalf("with-lock while a prune holds the lock: exit %d, want %d naming the pruner: %s", code, ExitLocked, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "gcroots", "other")); err == nil {
		t.Fatal("marker written while a prune held the lock")
	}
}

// with-lock passes a failed command's status through (and writes nothing),
// and a command that cannot start exits as env(1) and the shells do: 127
// when it is not found, 126 when it cannot be executed (it was 1, which the
// exit status table did not list).
func TestWithLockCommandStatus(t *testing.T) {
	dir := t.TempDir()
	live := "/nix/store/" + strings.Repeat("a", 32) + "-live"
	marker := filepath.Join(dir, "gcroots", "w")
	if code, _, _ := runKiss(t, "with-lock", marker, live, "--", "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("exit %d, want the command's 7", code)
	}
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		command string
		code    int
	}{
		{filepath.Join(dir, "no-such-command"), 127},
		{"kiss-no-such-command", 127},
		{notExec, 126},
		{t.TempDir(), 126},
	} {
		code, _, stderr := runKiss(t, "with-lock", marker, live, "--", c.command)
		if code != c.code || !strings.Contains(stderr, "starting "+c.command) {
			t.Errorf("with-lock -- %s: exit %d, want %d: %s", c.command, code, c.code, stderr)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("marker written for a command that failed")
	}
	if code, _, stderr := runKiss(t, "with-lock", marker, live, "--", "true"); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != live+"\n" {
		t.Fatalf("marker %q, %v", b, err)
	}
}
