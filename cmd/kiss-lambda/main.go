// Command kiss-lambda runs kiss prune as an AWS Lambda function (runtime
// provided.al2023), so a cache on S3 is pruned on a schedule with no host:
// EventBridge Scheduler invokes it with an Event, it runs prune.Run — the
// very prune `kiss prune` runs — with the function's role (the pruner
// policy of terraform/modules/kiss-cache-s3), and returns the report.
//
// Build the deployment package (the binary must be called bootstrap):
//
//	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -trimpath \
//	    -o bootstrap ./cmd/kiss-lambda && zip -j kiss-lambda.zip bootstrap
//
// A failed prune is a failed invocation (the Lambda Errors metric): the
// error names the reason, and the report is logged either way. See
// docs/terraform.md for the limits (15 minutes per run).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/duration"
	"github.com/kiss-cache/kiss/internal/gctune"
	"github.com/kiss-cache/kiss/prune"
	"github.com/kiss-cache/kiss/storage"
)

// Event is the invocation's input: the schedule's payload. Every field is
// optional but the store; durations are written as for kiss prune's flags
// (2h, 30d, 1d12h). Fields mirror kiss prune's flags. A field it does not
// have, a value of another type or data after the object fails the
// invocation (KissPruneUsage) before anything is read or deleted.
type Event struct {
	// Store is the cache (s3://BUCKET?region=…); default $KISS_STORE.
	Store string `json:"store,omitempty"`
	// Grace: nothing younger is deleted (default kiss prune's, 2h; "0s" for none).
	Grace string `json:"grace,omitempty"`
	// RootMaxAge: markers older than this stop counting (default: never).
	RootMaxAge string `json:"root_max_age,omitempty"`
	// Roots are extra root prefixes in the store (releases/).
	Roots []string `json:"roots,omitempty"`
	// DryRun plans only.
	DryRun bool `json:"dry_run,omitempty"`
	// LockWait is how long to wait for another prune's lease (default 2m).
	LockWait string `json:"lock_wait,omitempty"`
	// LockTTL is the lease's TTL (default 5m: a function stopped by its
	// timeout holds the lease, and so blocks writers, at most this long).
	LockTTL         string `json:"lock_ttl,omitempty"`
	AllowEmptyRoots bool   `json:"allow_empty_roots,omitempty"`
	// AllowEmptyMarkers: a marker naming no store path (0 bytes, only
	// non-text bytes) roots nothing instead of stopping the prune.
	AllowEmptyMarkers bool `json:"allow_empty_markers,omitempty"`
	AllowDangling     bool `json:"allow_dangling,omitempty"`
	NoMemo            bool `json:"no_memo,omitempty"`
	Concurrency       int  `json:"concurrency,omitempty"`
}

// Defaults of the function where they differ from kiss prune's.
const (
	defaultLockWait = 2 * time.Minute
	defaultLockTTL  = 5 * time.Minute
	// stopMargin is how long before the function's deadline the prune is
	// cancelled, so that it stops deleting, releases its lease and returns
	// its report instead of being killed mid-batch.
	stopMargin = 30 * time.Second
)

// envStore names the store when the event does not.
const envStore = "KISS_STORE"

// errUsage marks an event that cannot be run (retrying will not help).
var errUsage = errors.New("invalid event")

// options turns an event into prune options; the store URL comes from the
// event or from fallback.
func options(ev Event, fallback string, log *slog.Logger) (string, prune.Options, error) {
	store := ev.Store
	if store == "" {
		store = fallback
	}
	if store == "" {
		return "", prune.Options{}, fmt.Errorf("%w: no store (set \"store\" in the event or %s)", errUsage, envStore)
	}
	dur := func(name, s string, def time.Duration) (time.Duration, error) {
		if s == "" {
			return def, nil
		}
		d, err := duration.Parse(s)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %w", errUsage, name, err)
		}
		return d, nil
	}
	grace, err := dur("grace", ev.Grace, gc.DefaultGrace)
	if err != nil {
		return "", prune.Options{}, err
	}
	if grace == 0 {
		grace = -1 // gc: negative means none
	}
	wait, err := dur("lock_wait", ev.LockWait, defaultLockWait)
	if err != nil {
		return "", prune.Options{}, err
	}
	ttl, err := dur("lock_ttl", ev.LockTTL, defaultLockTTL)
	if err != nil {
		return "", prune.Options{}, err
	}
	maxAge, err := dur("root_max_age", ev.RootMaxAge, 0)
	if err != nil {
		return "", prune.Options{}, err
	}
	if ev.Concurrency < 0 || ev.Concurrency > gc.MaxConcurrency {
		return "", prune.Options{}, fmt.Errorf("%w: concurrency %d (0-%d)", errUsage, ev.Concurrency, gc.MaxConcurrency)
	}
	return store, prune.Options{
		Options: gc.Options{
			RootSources:       ev.Roots,
			Grace:             grace,
			RootMaxAge:        maxAge,
			Concurrency:       ev.Concurrency,
			AllowEmptyRoots:   ev.AllowEmptyRoots,
			AllowEmptyMarkers: ev.AllowEmptyMarkers,
			AllowDangling:     ev.AllowDangling,
			NoMemo:            ev.NoMemo,
			Logger:            log,
		},
		DryRun:   ev.DryRun,
		LockTTL:  ttl,
		LockWait: wait,
		Owner:    "kiss-lambda",
	}, nil
}

// handler prunes the store an event names and returns the report.
type handler struct {
	log      *slog.Logger
	envStore string
}

func (h *handler) handle(ctx context.Context, ev Event) (*gc.Report, error) {
	store, opts, err := options(ev, h.envStore, h.log)
	if err != nil {
		h.log.Error("kiss-lambda: refusing the event", "err", err)
		return nil, invokeError(prune.FailUsage, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-stopMargin))
		defer cancel()
	}
	st, err := storage.Open(ctx, store)
	if err != nil {
		h.log.Error("kiss-lambda: cannot open the store", "store", store, "err", err)
		fail := prune.FailStore
		if errors.Is(err, storage.ErrInvalidURL) {
			fail = prune.FailUsage
		}
		return nil, invokeError(fail, err)
	}
	defer st.Close()
	rep, err := prune.Run(ctx, st, opts)
	if err != nil {
		fail := prune.Classify(ctx, err)
		h.log.Error("kiss-lambda: prune failed", "store", st.URL(), "failure", fail.String(), "report", reportJSON(rep))
		return rep, invokeError(fail, fmt.Errorf("prune %s: %w", st.URL(), err))
	}
	h.log.Info("kiss-lambda: prune finished", "store", st.URL(), "report", reportJSON(rep))
	return rep, nil
}

// pruneError is a failed invocation and why; it unwraps to err.
type pruneError struct {
	fail prune.Failure
	err  error
}

func invokeError(fail prune.Failure, err error) error { return &pruneError{fail: fail, err: err} }

func (e *pruneError) Error() string { return e.err.Error() }
func (e *pruneError) Unwrap() error { return e.err }

// errorType names the failure as the runtime reports it (errorType):
// KissPruneRefused, KissPruneLocked, KissPruneLeaseLost, …
func (e *pruneError) errorType() string {
	name := "KissPrune"
	for _, part := range strings.Split(e.fail.String(), "-") {
		name += strings.ToUpper(part[:1]) + part[1:]
	}
	return name
}

// decodeEvent reads an invocation's payload (or an EventBridge scheduled
// event's detail) strictly: a field Event does not have (a misspelt "dry_run" or "grace" would otherwise run a real
// prune with the defaults), a value of the wrong type, or anything after
// the object is a usage error. An empty or null payload is the empty event.
func decodeEvent(payload []byte) (Event, error) {
	// An EventBridge rule with no input of its own delivers its scheduled
	// event (source aws.events): the event is that envelope's detail
	// (usually {}), held to the same rules.
	var envelope struct {
		Source     string          `json:"source"`
		DetailType string          `json:"detail-type"`
		Detail     json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(payload, &envelope) == nil && envelope.Source == "aws.events" && envelope.DetailType != "" {
		payload = envelope.Detail
	}
	var ev Event
	if len(bytes.TrimSpace(payload)) == 0 {
		return ev, nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return Event{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Event{}, fmt.Errorf("%w: data after the event object", errUsage)
	}
	return ev, nil
}

// Invoke is the function as the runtime calls it (lambda.Handler): the
// payload decoded by decodeEvent, then invoke; the report as JSON.
func (h *handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	ev, err := decodeEvent(payload)
	if err != nil {
		h.log.Error("kiss-lambda: refusing the event", "err", err)
		pe := &pruneError{fail: prune.FailUsage, err: err}
		return nil, messages.InvokeResponse_Error{Message: pe.Error(), Type: pe.errorType()}
	}
	rep, err := h.invoke(ctx, ev)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep)
}

// invoke is handle as the Lambda runtime calls it: a failure's errorType
// says which it is (the runtime would otherwise name the Go type).
func (h *handler) invoke(ctx context.Context, ev Event) (*gc.Report, error) {
	rep, err := h.handle(ctx, ev)
	var pe *pruneError
	if errors.As(err, &pe) {
		return nil, messages.InvokeResponse_Error{Message: pe.Error(), Type: pe.errorType()}
	}
	return rep, err
}

// reportJSON logs the report as one JSON value (slog would flatten it).
func reportJSON(rep *gc.Report) json.RawMessage {
	b, err := json.Marshal(rep)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

func main() {
	if os.Getenv("GOGC") == "" {
		defer gctune.Start(prune.GCPolicy)()
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)
	h := &handler{log: log, envStore: os.Getenv(envStore)}
	lambda.Start(h) // a lambda.Handler: Invoke gets the raw payload
}
