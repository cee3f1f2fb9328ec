package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestInterspersedFlags(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want []string }{
		{ // flags after STORE move in front of it, with their values
			[]string{"kiss", "prune", "/c", "--grace", "0s", "--dry-run"},
			[]string{"kiss", "prune", "--grace", "0s", "--dry-run", "/c"},
		},
		{ // global flags stay where they are; --name=value is one token
			[]string{"kiss", "--json", "prune", "/c", "--grace=2h"},
			[]string{"kiss", "--json", "prune", "--grace=2h", "/c"},
		},
		{ // subcommands
			[]string{"kiss", "roots", "add", "/c", "web", "/nix/store/x", "--json"},
			[]string{"kiss", "roots", "add", "--json", "/c", "web", "/nix/store/x"},
		},
		{ // nothing after -- moves
			[]string{"kiss", "prune", "/c", "--", "--dry-run"},
			[]string{"kiss", "prune", "/c", "--", "--dry-run"},
		},
		{ // with-lock parses its own flags (and COMMAND follows --): untouched
			[]string{"kiss", "with-lock", "/c/gcroots/m", "/nix/store/x", "--lock-wait", "1m", "--", "nix", "copy", "--to", "x"},
			[]string{"kiss", "with-lock", "/c/gcroots/m", "/nix/store/x", "--lock-wait", "1m", "--", "nix", "copy", "--to", "x"},
		},
		{ // unknown commands and help are left alone
			[]string{"kiss", "frobnicate", "--x"},
			[]string{"kiss", "frobnicate", "--x"},
		},
	} {
		if got := interspersed(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("interspersed(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestFlagsAfterStoreReachTheCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without interspersed flags this is "too many arguments" (exit 2); with
	// them, a dry run over an empty cache that allows empty roots succeeds.
	code, _, stderr := runKiss(t, "prune", dir, "--dry-run", "--allow-empty-roots", "--grace", "1h")
	if code != ExitOK {
		t.Fatalf("exit %d, want %d; stderr %q", code, ExitOK, stderr)
	}
	code, _, stderr = runKiss(t, "prune", dir, "--grace", "not-a-duration")
	if code != ExitUsage {
		t.Fatalf("bad --grace after STORE: exit %d, want %d; stderr %q", code, ExitUsage, stderr)
	}
}
