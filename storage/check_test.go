package storage_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// checkClean runs Check and asserts it left no probe object behind.
func checkClean(t *testing.T, st storage.Store) storage.CheckReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep := storage.Check(ctx, st, storage.CheckOptions{})
	t.Logf("\n%s", rep)
	for obj, err := range st.List(ctx, ".kiss/check/") {
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("probe object left behind: %s", obj.Key)
	}
	if len(rep.Results) != 8 {
		t.Errorf("report has %d rows, want 8", len(rep.Results))
	}
	return rep
}

func TestCheckPassesOnRealStores(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) storage.Store{
		"mem": func(t *testing.T) storage.Store { return storage.NewMem(nil) },
		"file": func(t *testing.T) storage.Store {
			st, err := storage.OpenFile(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		"versitygw": func(t *testing.T) storage.Store {
			st, err := storage.Open(context.Background(), testenv.Versitygw(t))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	} {
		t.Run(name, func(t *testing.T) {
			rep := checkClean(t, open(t))
			if !rep.OK() {
				t.Fatalf("Check failed on %s: %v", name, rep.Failed())
			}
			for _, r := range rep.Results {
				if r.Status != storage.CheckOK {
					t.Errorf("%s: %s is %s: %s", name, r.Guarantee, r.Status, r.Detail)
				}
			}
		})
	}
}

// ignoresPreconditions is a store that drops every condition, as a naive
// S3 clone or a WebDAV server would.
type ignoresPreconditions struct{ storage.Store }

func (s ignoresPreconditions) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) (storage.Object, error) {
	return s.Store.Put(ctx, key, r, storage.PutOptions{ContentType: o.ContentType})
}

func (s ignoresPreconditions) Delete(ctx context.Context, key string, _ storage.DeleteOptions) error {
	return s.Store.Delete(ctx, key, storage.DeleteOptions{})
}

func TestCheckNamesIgnoredPreconditions(t *testing.T) {
	rep := checkClean(t, ignoresPreconditions{storage.NewMem(nil)})
	want := []string{storage.GuaranteeCreateIfAbsent, storage.GuaranteeCreateRace, storage.GuaranteeIfMatch, storage.GuaranteeConditionalDelete}
	if got := rep.Failed(); !slices.Equal(got, want) {
		t.Fatalf("Failed() = %v, want %v", got, want)
	}
	if rep.OK() {
		t.Fatal("OK() on a store without preconditions")
	}
}

// gofakes3Store serves an in-memory gofakes3 on 127.0.0.1 and opens it
// through the real s3:// driver.
func gofakes3Store(t *testing.T, params string) storage.Store {
	t.Helper()
	be := s3mem.New()
	if err := be.CreateBucket("fake"); err != nil {
		t.Fatal(err)
	}
	st, err := openFakeS3(t, "fake", params, gofakes3.New(be).Server())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openFakeS3 opens s3://bucket (plus params) through the real s3:// driver
// on an S3 endpoint that h serves on 127.0.0.1, with made-up credentials
// and no instance-metadata lookup; the store and server end with the test.
func openFakeS3(t *testing.T, bucket, params string, h http.Handler) (storage.Store, error) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "fake")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "fakefake")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	st, err := storage.Open(context.Background(), "s3://"+bucket+"?region=us-east-1&endpoint="+url.QueryEscape(srv.URL)+params)
	if err == nil {
		t.Cleanup(func() { st.Close() })
	}
	return st, err
}

func TestCheckNamesGofakes3IgnoringConditionalDelete(t *testing.T) {
	rep := checkClean(t, gofakes3Store(t, ""))
	if got := rep.Failed(); !slices.Equal(got, []string{storage.GuaranteeConditionalDelete}) {
		t.Fatalf("Failed() = %v, want [conditional-delete]", got)
	}
	for _, r := range rep.Results {
		if r.Guarantee == storage.GuaranteeConditionalDelete && !strings.Contains(r.Detail, "conditional_delete=false") {
			t.Errorf("detail gives no remedy: %s", r.Detail)
		}
	}
	// Declared honestly, the same server passes (read-compare-delete).
	rep = checkClean(t, gofakes3Store(t, "&conditional_delete=false"))
	if !rep.OK() {
		t.Fatalf("with conditional_delete=false: Failed() = %v", rep.Failed())
	}
}

// Issue 11 item 8: a store that only fails transiently has not shown that
// it lacks a guarantee: the probes are undecided, none failed, OK is false.
func TestCheckTransientErrorsAreUndecided(t *testing.T) {
	f := storagetest.NewFaulty(storage.NewMem(nil))
	f.Inject(storagetest.Fault{Times: -1, Fail: true})
	rep := storage.Check(context.Background(), f, storage.CheckOptions{Backoff: time.Millisecond})
	t.Logf("\n%s", rep)
	if len(rep.Failed()) != 0 {
		t.Fatalf("transient errors reported as missing guarantees: %v", rep.Failed())
	}
	if rep.OK() || len(rep.Undecided()) != 7 {
		t.Fatalf("OK=%v undecided=%v, want all 7 undecided", rep.OK(), rep.Undecided())
	}
	// Probing stops after two undecided probes: the dead store is not
	// asked for every guarantee in turn.
	if n := f.Calls(storagetest.OpAny); n > 40 {
		t.Errorf("%d store calls on a dead store", n)
	}
}

// Responses lost after the store applied the write (conditional creates,
// compare-and-swaps, deletes) are retried and resolved by reading back:
// every guarantee is decided and holds.
func TestCheckResolvesLostResponses(t *testing.T) {
	f := storagetest.NewFaulty(storage.NewMem(nil))
	for _, cond := range []string{"create", "cas", "plain"} {
		f.Inject(storagetest.Fault{Op: storagetest.OpPut, Cond: cond, Nth: 2, Times: 1, LoseResponse: true})
	}
	f.Inject(storagetest.Fault{Op: storagetest.OpDelete, LoseResponse: true, Times: 2})
	f.Inject(storagetest.Fault{Op: storagetest.OpGet, Nth: 3, Fail: true})
	f.Inject(storagetest.Fault{Op: storagetest.OpList, Fail: true})
	rep := storage.Check(context.Background(), f, storage.CheckOptions{Backoff: time.Millisecond})
	t.Logf("\n%s", rep)
	if f.Fired() < 6 {
		t.Fatalf("only %d faults fired", f.Fired())
	}
	if !rep.OK() {
		t.Fatalf("failed %v, undecided %v", rep.Failed(), rep.Undecided())
	}
}
