package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
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

// TestUsageIsOneLine (issue 14): unknown commands, no command and bad
// flags are exit 2 with one error line and a hint on stderr, nothing on
// stdout (where --json consumers read).
func TestUsageIsOneLine(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuchcommand"},
		{"roots", "nosuch"},
		{"prune", "--bogus", "x"},
		{"--json", "prune", "--lock-wait", "600", "x"},
		{"why", "--grace", "2 days", "x", "y"},
	} {
		code, stdout, stderr := runKiss(t, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != ExitUsage || stdout != "" || len(lines) != 2 || !strings.HasPrefix(lines[1], "Run 'kiss") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2, no stdout, an error and a hint", args, code, stdout, stderr)
		}
	}
}

func TestVersionV(t *testing.T) {
	code, out, _ := runKiss(t, "-V")
	if code != ExitOK || out != "kiss "+version+"\n" {
		t.Fatalf("-V: exit %d, %q", code, out)
	}
}

// TestDurationSyntax: one syntax for every duration flag, days and weeks
// included; a bare number is refused with the expected format named.
func TestDurationSyntax(t *testing.T) {
	for s, want := range map[string]time.Duration{"2d": 48 * time.Hour, "1w": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second, "10m": 10 * time.Minute, "0": 0} {
		if d, err := parseDuration(s); err != nil || d != want {
			t.Errorf("%q: %v %v, want %v", s, d, err, want)
		}
	}
	for _, s := range []string{"600", "2 d", "30D", "", "1.5"} {
		if _, err := parseDuration(s); err == nil || !strings.Contains(err.Error(), "30d") {
			t.Errorf("%q: %v, want an error naming the syntax", s, err)
		}
	}
	// Accepted by a real command: --grace 2d and --root-max-age 30d parse
	// (an empty store then has no roots: refused, exit 4, not a usage error).
	code, _, stderr := runKiss(t, "prune", "--dry-run", "--grace", "2d", "--root-max-age", "30d", "--lock-wait", "1m", t.TempDir())
	if code != ExitRefused {
		t.Errorf("prune --grace 2d: exit %d (%s), want %d", code, stderr, ExitRefused)
	}
}

func TestRootsListSorted(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"zeta", "alpha", "ci/main", "mid"} {
		p := "/nix/store/" + strings.Repeat("a", 32) + "-" + strings.ReplaceAll(name, "/", "-")
		if code, _, stderr := runKiss(t, "roots", "add", dir, name, p); code != ExitOK {
			t.Fatalf("roots add %s: exit %d: %s", name, code, stderr)
		}
	}
	for range 3 {
		code, out, stderr := runKiss(t, "roots", "list", "--json", dir)
		if code != ExitOK {
			t.Fatalf("roots list: exit %d: %s", code, stderr)
		}
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), `"source": "`); ok {
				got = append(got, strings.TrimSuffix(v, `",`))
			}
		}
		want := "gcroots/alpha gcroots/ci/main gcroots/mid gcroots/zeta"
		if strings.Join(got, " ") != want {
			t.Fatalf("roots list order %v, want %s", got, want)
		}
	}
}
