package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/storage"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestOptions(t *testing.T) {
	store, o, err := options(Event{}, "s3://cache?region=eu-west-1", quiet)
	if err != nil || store != "s3://cache?region=eu-west-1" || o.Grace != gc.DefaultGrace || o.LockTTL != defaultLockTTL ||
		o.LockWait != defaultLockWait || o.DryRun || o.RootMaxAge != 0 || o.Owner != "kiss-lambda" {
		t.Errorf("defaults: %q %+v %v", store, o, err)
	}
	store, o, err = options(Event{Store: "s3://other", Grace: "0s", RootMaxAge: "30d", Roots: []string{"releases/"}, DryRun: true, LockTTL: "1m", AllowEmptyMarkers: true}, "s3://cache", quiet)
	if err != nil || store != "s3://other" || o.Grace >= 0 || o.RootMaxAge != 30*24*time.Hour || !o.DryRun || o.LockTTL != time.Minute || len(o.RootSources) != 1 || !o.AllowEmptyMarkers {
		t.Errorf("explicit: %q %+v %v", store, o, err)
	}
	for _, ev := range []Event{{}, {Store: "s3://c", Grace: "2 days"}, {Store: "s3://c", Grace: "-1h"}, {Store: "s3://c", RootMaxAge: "soon"}, {Store: "s3://c", RootMaxAge: "30"}, {Store: "s3://c", LockWait: "x"}, {Store: "s3://c", Concurrency: -1}, {Store: "s3://c", Concurrency: 100000000}} {
		if _, _, err := options(ev, "", quiet); !errors.Is(err, errUsage) {
			t.Errorf("%+v: %v, want errUsage", ev, err)
		}
	}
}

// The handler prunes a real (file://) cache the way kiss prune does:
// garbage gone, everything rooted and every newborn kept.
func TestHandlePrunes(t *testing.T) {
	ctx := context.Background()
	cache, err := synth.Generate(synth.Config{Paths: 400, Seed: 7, Roots: 4})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	manifest := t.TempDir()
	if err := cache.WriteDir(ctx, dir, 4, nil); err != nil {
		t.Fatal(err)
	}
	if err := cache.WriteManifest(manifest); err != nil {
		t.Fatal(err)
	}
	h := &handler{log: quiet, envStore: "file://" + dir}
	// The function's deadline reaches the prune, less the stop margin.
	ctx, cancel := context.WithTimeout(ctx, stopMargin+time.Minute)
	defer cancel()
	rep, err := h.handle(ctx, Event{})
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	st, err := storage.Open(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res, err := synth.Check(ctx, st, manifest, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LiveMissing) > 0 || res.NewbornMissing > 0 || res.GarbageLeft > 0 || res.GarbageTotal == 0 || rep.Deleted.Objects != int64(res.GarbageTotal) {
		t.Errorf("after the handler: %+v, report deleted %+v", res, rep.Deleted)
	}

	// A dry run deletes nothing; a bad event or store fails the invocation.
	if _, err := h.handle(context.Background(), Event{DryRun: true, Grace: "0s"}); err != nil {
		t.Errorf("dry run: %v", err)
	}
	if _, err := h.handle(context.Background(), Event{Grace: "soon"}); !errors.Is(err, errUsage) {
		t.Errorf("bad event: %v", err)
	}
	if _, err := h.handle(context.Background(), Event{Store: "ftp://x"}); err == nil {
		t.Error("bad store URL accepted")
	}
}

// A context that ends before the margin stops the prune before it deletes.
func TestHandleStopsBeforeDeadline(t *testing.T) {
	cache, err := synth.Generate(synth.Config{Paths: 64, Seed: 3, Roots: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := cache.WriteDir(context.Background(), dir, 2, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopMargin-time.Second)
	defer cancel()
	h := &handler{log: quiet}
	rep, err := h.handle(ctx, Event{Store: "file://" + dir})
	if err == nil || (rep != nil && rep.Deleted.Objects != 0) {
		t.Fatalf("past the stop margin: err %v report %+v", err, rep)
	}
}

// A failure reaches the runtime with an errorType naming its class.
func TestInvokeErrorType(t *testing.T) {
	dir := t.TempDir() // a cache with no roots: refused
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &handler{log: quiet, envStore: "file://" + dir}
	for ev, want := range map[*Event]string{
		{Grace: "soon"}:    "KissPruneUsage",
		{Grace: "0s"}:      "KissPruneRefused",
		{Store: "ftp://x"}: "KissPruneUsage",
	} {
		_, err := h.invoke(context.Background(), *ev)
		var ie messages.InvokeResponse_Error
		if !errors.As(err, &ie) || ie.Type != want || ie.Message == "" {
			t.Errorf("%+v: %#v, want errorType %s", *ev, err, want)
		}
	}
}

// An event the function does not expect fails the invocation as
// KissPruneUsage, logged, and deletes nothing: a misspelt "dry_run" (or
// grace, root_max_age…) ran a real prune with the defaults; a value of the
// wrong type or trailing data failed with the JSON decoder's errorType,
// unlogged. An empty or null payload is the empty event (KISS_STORE).
func TestInvokeRefusesUnexpectedEvents(t *testing.T) {
	cache, err := synth.Generate(synth.Config{Paths: 64, Seed: 5, Roots: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := cache.WriteDir(context.Background(), dir, 2, nil); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	before := count()
	var logs strings.Builder
	h := &handler{log: slog.New(slog.NewTextHandler(&logs, nil)), envStore: "file://" + dir}
	for _, payload := range []string{
		`{"dryrun":true,"grace":"0s"}`,
		`{"dry-run":true,"grace":"0s"}`,
		`{"grace_period":"30d","dry_run":true}`,
		`{"grace":7200}`,
		`{"dry_run":"yes"}`,
		`"s3://cache"`,
		`[]`,
		`{"grace":"0s","dry_run":true} {"dry_run":false}`,
		`{"grace":"0s"`,
		`{"source":"aws.events","detail-type":"Scheduled Event","detail":{"dryrun":true,"grace":"0s"}}`,
	} {
		logs.Reset()
		_, err := h.Invoke(context.Background(), []byte(payload))
		var ie messages.InvokeResponse_Error
		if !errors.As(err, &ie) || ie.Type != "KissPruneUsage" || ie.Message == "" {
			t.Errorf("%s: %#v, want errorType KissPruneUsage", payload, err)
		}
		if !strings.Contains(logs.String(), "refusing the event") {
			t.Errorf("%s: not logged: %q", payload, logs.String())
		}
		if n := count(); n != before {
			t.Fatalf("%s: %d of %d files left", payload, n, before)
		}
	}
	// An EventBridge rule without an input of its own sends its scheduled
	// event; its detail is the event.
	scheduled := `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-12-07T03:00:00Z","region":"eu-west-1","resources":["arn:aws:events:eu-west-1:123456789012:rule/kiss-prune"],"detail":{}}`
	for _, payload := range []string{``, ` `, `null`, `{}`, scheduled} {
		out, err := h.Invoke(context.Background(), []byte(payload))
		if err != nil || !strings.Contains(string(out), `"store":"file://`) {
			t.Errorf("%q: %s, %v: want a prune of KISS_STORE", payload, out, err)
		}
	}
}
