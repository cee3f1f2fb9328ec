package reliability_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiss-cache/kiss/internal/reliability"
)

func TestRenderParseRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, r := range []reliability.Result{
		{Suite: "torture", Variant: "file+s3", Test: "TestTorture", Command: "go test -run TestTorture ./e2e/",
			Tried: map[string]int64{"pushes": 10}, Held: map[string]int64{"checks passed": 3}, Passed: true},
		{Suite: "damaged-cache", Variant: "file", Tried: map[string]int64{"cases": 5}, Lost: 1, Passed: false},
	} {
		if err := reliability.Record(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	results, err := reliability.Load(dir)
	if err != nil || len(results) != 2 {
		t.Fatalf("Load: %v %v", results, err)
	}
	doc, err := reliability.Render(reliability.Run{Commit: "abc", Date: "today", Command: "x", Results: results})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("**Rooted store paths lost: 1.")) || !bytes.Contains(doc, []byte("| damaged-cache | file | 5 cases | 1 | 0 | **no** |")) {
		t.Fatalf("the document does not say what the results say:\n%s", doc)
	}
	run, err := reliability.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	again, err := reliability.Render(run)
	if err != nil || !bytes.Equal(again, doc) {
		t.Fatalf("render(parse(doc)) differs (%v)", err)
	}
}

// docs/reliability.md is generated (scripts/reliability.sh), not edited:
// it is exactly what its own results render to, and those results say
// that every suite ran and passed, with nothing rooted lost and no
// unauthorised write.
func TestReliabilityDocIsGeneratedAndClean(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := reliability.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	again, err := reliability.Render(run)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, doc) {
		t.Fatal("docs/reliability.md is not what its results render to: regenerate it with scripts/reliability.sh, do not edit it")
	}
	suites := map[string]bool{}
	for _, r := range run.Results {
		suites[r.Suite+"/"+r.Variant] = true
		if !r.Passed || r.Lost != 0 || r.Unauthorized != 0 {
			t.Errorf("%s/%s: passed %v, lost %d, unauthorised %d", r.Suite, r.Variant, r.Passed, r.Lost, r.Unauthorized)
		}
		var tried int64
		for _, v := range r.Tried {
			tried += v
		}
		if tried == 0 {
			t.Errorf("%s/%s tried nothing", r.Suite, r.Variant)
		}
	}
	for _, want := range []string{"torture/file+s3+gateways", "damaged-cache/file", "damaged-cache/s3", "fuzz/all targets",
		"faults/s3 fault proxy", "faults/pruner killed mid-delete", "faults/full filesystem (tmpfs)", "faults/host clock off by hours"} {
		if !suites[want] {
			t.Errorf("docs/reliability.md has no results for %s", want)
		}
	}
}
