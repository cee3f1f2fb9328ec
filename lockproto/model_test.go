package lockproto

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestModel checks the Promela model of the protocol (model/kiss.pml) with
// spin: the protocol must satisfy S1 (every rooted closure stays complete)
// with an exhaustive search, and each deliberately broken variant must be
// rejected, which shows the check can fail. In CI (CI set) or with
// KISS_REQUIRE_SPIN=1 a missing spin or C compiler fails the test.
// KISS_MODEL_FULL=1 adds a longer time bound (MAXT=5: 8.7 M states, about
// 30 s). Two pruners (-DNP=2) exceed 64 M states and are not run here.
func TestModel(t *testing.T) {
	testenv.SkipShort(t, "the spin model check")
	spin, err := exec.LookPath("spin")
	if err == nil {
		_, err = exec.LookPath("cc")
	}
	if err != nil {
		if os.Getenv("CI") != "" || os.Getenv("KISS_REQUIRE_SPIN") == "1" {
			t.Fatalf("spin and cc are required (Debian packages spin, gcc): %v", err)
		}
		t.Skipf("spin or cc not installed (%v); CI fails here instead", err)
	}
	src, err := filepath.Abs("model/kiss.pml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		defs   []string
		broken bool
	}{
		{"protocol", nil, false},
		{"broken_writer", []string{"-DBROKEN_WRITER"}, true},
		{"no_fence", []string{"-DNO_FENCE"}, true},
		{"late_abort", []string{"-DHALF=4"}, true},
	}
	if os.Getenv("KISS_MODEL_FULL") == "1" {
		cases = append(cases,
			struct {
				name   string
				defs   []string
				broken bool
			}{"protocol_long", []string{"-DMAXT=5"}, false},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := runSpin(t, spin, src, tc.defs)
			errs := regexp.MustCompile(`errors: (\d+)`).FindStringSubmatch(out)
			if errs == nil {
				t.Fatalf("no result from pan:\n%s", out)
			}
			n, _ := strconv.Atoi(errs[1])
			states := regexp.MustCompile(`(\d+) states, stored`).FindStringSubmatch(out)
			t.Logf("%s: errors %d, states %v", tc.name, n, states)
			if tc.broken {
				if n == 0 || !regexp.MustCompile(`assertion violated`).MatchString(out) {
					t.Fatalf("spin accepted a broken variant (%v):\n%s", tc.defs, out)
				}
				return
			}
			if n != 0 {
				t.Fatalf("spin found a violation of the protocol:\n%s", out)
			}
			for _, bad := range []string{"max search depth too small", "out of memory", "search not completed"} {
				if regexp.MustCompile(bad).MatchString(out) {
					t.Fatalf("incomplete search (%s):\n%s", bad, out)
				}
			}
		})
	}
}

func runSpin(t *testing.T, spin, src string, defs []string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	run := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		// pan exits non-zero when it finds errors; judged from its output.
		if err != nil && filepath.Base(name) != "pan" {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run(spin, append(append([]string{"-a"}, defs...), src)...)
	run("cc", "-O2", "-w", "-DSAFETY", "-DCOLLAPSE", "-o", "pan", "pan.c")
	return run(filepath.Join(dir, "pan"), "-m100000")
}
