package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// NixpkgsLib returns the directory of nixpkgs' lib/ (the Nix library with
// the module system) for evaluating kiss's NixOS modules with the real
// lib.evalModules: $KISS_NIXPKGS_LIB, else ../shared/nixpkgs-lib/lib next
// to the repository (the fixture of kiss's development machines). A user's
// clone usually has neither: the test is skipped, saying so, unless
// KISS_REQUIRE_NIXPKGS_LIB is set (scripts/test.sh sets it), which makes
// the absence a failure.
func NixpkgsLib(t testing.TB) string {
	t.Helper()
	candidates := []string{filepath.Join(ModuleRoot(), "..", "shared", "nixpkgs-lib", "lib")}
	if d := os.Getenv("KISS_NIXPKGS_LIB"); d != "" {
		candidates = []string{d}
	}
	for _, d := range candidates {
		if _, err := os.Stat(filepath.Join(d, "modules.nix")); err == nil {
			abs, err := filepath.Abs(d)
			if err != nil {
				t.Fatal(err)
			}
			return abs
		}
	}
	err := fmt.Errorf("no nixpkgs lib/ (with modules.nix) at %v; point KISS_NIXPKGS_LIB at one (e.g. <nixpkgs>/lib)", candidates)
	if v := os.Getenv("KISS_REQUIRE_NIXPKGS_LIB"); v != "" && v != "0" && v != "false" {
		t.Fatalf("testenv: nixpkgs lib is required (KISS_REQUIRE_NIXPKGS_LIB=%s) but unavailable: %v", v, err)
	}
	t.Skipf("testenv: SKIPPING: the real NixOS module system is unavailable: %v (set KISS_REQUIRE_NIXPKGS_LIB=1 to make this fatal)", err)
	return ""
}
