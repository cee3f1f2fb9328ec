package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// EnvDir names the environment variable that gives tests the directory to
// record their results in (scripts/reliability.sh sets it).
const EnvDir = "KISS_RELIABILITY_DIR"

// Result is what one suite (one test, on one backend) tried and saw.
type Result struct {
	// Suite names the suite ("torture", "faults", "damaged-cache", …) and
	// Variant what it ran on ("file", "s3", "gateway-mtls", …).
	Suite   string `json:"suite"`
	Variant string `json:"variant"`
	// Test is the Go test that produced it, Command how to run it again.
	Test    string `json:"test"`
	Command string `json:"command"`
	// Tried counts what was attempted (pushes, prunes, faults injected,
	// kills, cases…), Held what held, by name. Lost and Unauthorized are
	// the two figures that must be 0: rooted store paths lost, writes
	// that landed without the right to write.
	Tried        map[string]int64 `json:"tried"`
	Held         map[string]int64 `json:"held,omitempty"`
	Lost         int64            `json:"lost_rooted_paths"`
	Unauthorized int64            `json:"unauthorized_writes"`
	// Notes are free lines for the document (e.g. a case list).
	Notes    []string  `json:"notes,omitempty"`
	Seconds  float64   `json:"seconds"`
	Finished time.Time `json:"finished"`
	Passed   bool      `json:"passed"`
}

// Record writes r to dir/<suite>-<variant>.json; an empty dir records
// nothing. A test records once, at its end, whether it passed.
func Record(dir string, r Result) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if r.Finished.IsZero() {
		r.Finished = time.Now().UTC()
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	name := safe(r.Suite) + "-" + safe(r.Variant) + ".json"
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func safe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// Load reads every result in dir, sorted by suite and variant.
func Load(dir string) ([]Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Suite != out[j].Suite {
			return out[i].Suite < out[j].Suite
		}
		return out[i].Variant < out[j].Variant
	})
	return out, nil
}
