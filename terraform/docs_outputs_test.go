package terraform_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestDocumentedOutputsExist: docs/terraform.md walks through
// examples/complete and tells the reader to run `terraform output NAME`
// there; every such NAME must be an output of that example.
func TestDocumentedOutputsExist(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "docs", "terraform.md"))
	if err != nil {
		t.Fatal(err)
	}
	tf, err := os.ReadFile(filepath.Join("examples", "complete", "outputs.tf"))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^output "([a-z0-9_]+)"`).FindAllStringSubmatch(string(tf), -1) {
		have[m[1]] = true
	}
	uses := regexp.MustCompile(`terraform output\s+(?:-[a-z]+\s+)*([a-z0-9_]+)`).FindAllStringSubmatch(string(doc), -1)
	if len(uses) == 0 {
		t.Fatal("docs/terraform.md names no `terraform output`")
	}
	for _, m := range uses {
		if !have[m[1]] {
			t.Errorf("docs/terraform.md runs `terraform output %s`, but examples/complete has no such output (it has %v)", m[1], have)
		}
	}
}
