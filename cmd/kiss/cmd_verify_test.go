package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// verify --restore names paths as every other command does: in the cache's
// own store directory (nix-cache-info's StoreDir), not always /nix/store.
func TestVerifyRestorePathsInTheCachesStoreDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /gnu/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gnu := "/gnu/store/" + strings.Repeat("a", 32) + "-x"
	if code, _, stderr := runKiss(t, "verify", "--restore", dir, gnu); code != ExitOK {
		t.Fatalf("verify --restore %s in a /gnu/store cache: exit %d, want %d: %s", gnu, code, ExitOK, stderr)
	}
	nix := "/nix/store/" + strings.Repeat("a", 32) + "-x"
	if code, _, stderr := runKiss(t, "verify", "--restore", dir, nix); code != ExitUsage {
		t.Fatalf("verify --restore %s in a /gnu/store cache: exit %d, want %d: %s", nix, code, ExitUsage, stderr)
	}
}
