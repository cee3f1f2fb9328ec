package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

func TestStorageCheckPasses(t *testing.T) {
	// The gateway's http:// client store, over a file:// directory.
	backing, err := storage.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw, stop, err := gateway.Ephemeral(context.Background(), backing)
	if err != nil {
		t.Fatal(err)
	}
	defer stop(context.Background())
	for name, store := range map[string]string{
		"file":      t.TempDir(),
		"versitygw": testenv.Versitygw(t),
		"gateway":   gw,
	} {
		code, out, stderr := runKiss(t, "storage", "check", store)
		if code != ExitOK {
			t.Fatalf("%s: exit %d\n%s%s", name, code, out, stderr)
		}
		for _, g := range []string{"read-after-write", "list-after-write", "create-if-absent", "create-race", "if-match", "conditional-delete", "clock-skew", "cleanup"} {
			if !strings.Contains(out, g) {
				t.Errorf("%s: table lacks %s:\n%s", name, g, out)
			}
		}
		if strings.Contains(out, " fail ") {
			t.Errorf("%s: a row failed:\n%s", name, out)
		}
	}
}

func TestStorageCheckNamesMissingGuarantee(t *testing.T) {
	be := s3mem.New()
	if err := be.CreateBucket("fake"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be).Server())
	defer srv.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "fake")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "fakefake")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	store := "s3://fake?region=us-east-1&endpoint=" + url.QueryEscape(srv.URL)

	code, out, stderr := runKiss(t, "--json", "storage", "check", store)
	if code != ExitStore {
		t.Fatalf("exit %d, want %d\n%s%s", code, ExitStore, out, stderr)
	}
	if !strings.Contains(stderr, "conditional-delete") {
		t.Errorf("stderr does not name the missing guarantee: %q", stderr)
	}
	var rep struct {
		OK      bool     `json:"ok"`
		Failed  []string `json:"failed"`
		Results []struct {
			Guarantee, Status string
			Required          bool
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if rep.OK || len(rep.Failed) != 1 || rep.Failed[0] != "conditional-delete" {
		t.Fatalf("json ok=%v failed=%v", rep.OK, rep.Failed)
	}

	code, _, stderr = runKiss(t, "storage", "check", store+"&conditional_delete=false")
	if code != ExitOK {
		t.Fatalf("with conditional_delete=false: exit %d: %s", code, stderr)
	}
}

func TestStorageCheckUsage(t *testing.T) {
	for _, args := range [][]string{
		{"storage", "check"},
		{"storage", "check", "s3://"},
		{"storage", "check", "s3://b?bogus=1"},
		{"storage", "check", "ftp://x/y"},
	} {
		if code, _, stderr := runKiss(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, stderr)
		}
	}
}
