package nixos_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/duration"
	"github.com/kiss-cache/kiss/internal/testenv"
)

// TestDurationTypeAgreesWithCLI: the modules' duration and age types (nixos/
// lib.nix) accept exactly what kiss's flags accept (internal/duration), so a
// value that evaluates never fails the unit at run time, and a value kiss
// would take is not refused by the module.
func TestDurationTypeAgreesWithCLI(t *testing.T) {
	nix := testenv.Nix(t)
	lib := testenv.NixpkgsLib(t)
	inputs := []string{
		"90s", "10m", "2h", "1d12h", "30d", "2w", "1.5h", ".5h", "10m0s", "1h30m", "0", "0s",
		"100ms", "5us", "5µs", "7ns", "1w2d3h4m5s",
		"600", "30", "1.5", "", "2x", "d", "h1", "1 h", "-1h", "+1h", "1H", "1D", "2 days", "1h 30m", "0x10s",
	}
	quoted := make([]string, len(inputs))
	for i, s := range inputs {
		b, _ := json.Marshal(s)
		quoted[i] = string(b)
	}
	expr := fmt.Sprintf(`let lib = import %s; k = import %s { inherit lib; }; in
		map (s: { duration = k.types.duration.check s; age = k.types.age.check s; }) [ %s ]`,
		lib, filepath.Join(testenv.ModuleRoot(), "nixos", "lib.nix"), strings.Join(quoted, " "))
	out, err := nix.Run("nix-instantiate", "--eval", "--strict", "--json", "--expr", expr)
	if err != nil {
		t.Fatal(err)
	}
	var got []struct{ Duration, Age bool }
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != len(inputs) {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	for i, s := range inputs {
		d, err := duration.Parse(s)
		cli := err == nil
		if got[i].Duration != cli {
			t.Errorf("%q: module duration type accepts=%v, kiss's flags accept=%v (%v)", s, got[i].Duration, cli, err)
		}
		if want := cli && d > 0; got[i].Age != want {
			t.Errorf("%q: module age type accepts=%v, want %v (a positive duration)", s, got[i].Age, want)
		}
	}
}
