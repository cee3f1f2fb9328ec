package main

import (
	"bytes"
	"strings"
	"testing"
)

func runKiss(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"kiss"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpListsExitStatus(t *testing.T) {
	code, out, _ := runKiss(t, "--help")
	if code != ExitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"EXIT STATUS", "--log-level", "--json"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runKiss(t, "--version")
	if code != ExitOK || !strings.Contains(out, version) {
		t.Fatalf("--version: exit %d, %q", code, out)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--log-level", "loud"},
		{"--no-such-flag"},
	} {
		code, _, stderr := runKiss(t, args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, ExitUsage, stderr)
		}
		if !strings.Contains(stderr, "kiss:") {
			t.Errorf("%v: no error message on stderr: %q", args, stderr)
		}
	}
}
