package gc_test

import (
	"testing"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// Issue 11 item 9: a delete batch that landed but whose answer was lost
// must not be reported as "deleted 0". The pruner re-checks the batch: what
// is gone counts as deleted, what it cannot check counts as uncertain, and
// the run still fails (the batch did not succeed as far as it knows).
func TestLostDeleteResponseIsRechecked(t *testing.T) {
	memVariants(t, func(t *testing.T, newMemCache func(testing.TB) *cache) {
		w := newWorld(newMemCache(t))
		before := w.keys()
		f := storagetest.NewFaulty(w.st)
		// The first metadata batch lands, its answer is lost.
		f.Inject(storagetest.Fault{Op: storagetest.OpDeleteMany, LoseResponse: true})
		rep, err := prune(f, gc.Options{Grace: -1})
		if err == nil {
			t.Fatal("a batch whose answer was lost did not fail the run")
		}
		gone := 0
		for k := range before {
			if !w.exists(k) {
				gone++
			}
		}
		if gone == 0 {
			t.Fatal("the lost batch was not applied (test setup)")
		}
		t.Logf("err %v; deleted %+v uncertain %+v; warnings %q", err, rep.Deleted, rep.DeletedUncertain, rep.Warnings)
		if rep.Deleted.Objects != int64(gone) {
			t.Fatalf("report says %d objects deleted, %d are gone", rep.Deleted.Objects, gone)
		}
		if rep.DeletedUncertain.Objects != 0 {
			t.Fatalf("re-check succeeded, yet %d objects are uncertain", rep.DeletedUncertain.Objects)
		}
		checkClosures(t, w.st)
	})
}

// When the re-check itself cannot tell (the store keeps failing), the
// batch's objects are counted as uncertain, never as not deleted.
func TestUncheckableDeleteBatchIsUncertain(t *testing.T) {
	w := newWorld(newMemCache(t))
	f := storagetest.NewFaulty(w.st)
	p, err := gc.NewPlan(ctx, f, gc.Options{Grace: -1, NoMemo: true, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// From now on: the first batch lands but its answer is lost, and every
	// stat fails.
	f.Inject(storagetest.Fault{Op: storagetest.OpDeleteMany, LoseResponse: true})
	f.Inject(storagetest.Fault{Op: storagetest.OpStat, Times: -1, Fail: true})
	rep, err := p.Execute(ctx, &countFence{}, nil)
	if !storagetest.IsInjected(err) {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	t.Logf("deleted %+v uncertain %+v; warnings %q", rep.Deleted, rep.DeletedUncertain, rep.Warnings)
	if rep.Deleted.Objects != 0 || rep.DeletedUncertain.Objects != 2 {
		t.Fatalf("deleted %d, uncertain %d; want 0 and the batch's 2", rep.Deleted.Objects, rep.DeletedUncertain.Objects)
	}
	if len(rep.Warnings) == 0 {
		t.Fatal("no warning about the uncertain batch")
	}
}
