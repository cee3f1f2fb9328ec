package gc_test

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
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

// phaseRecorder records what each phase announced and advanced.
type phaseRecorder struct {
	mu       sync.Mutex
	started  map[string]gc.Count
	advanced map[string]gc.Count
}

func newPhaseRecorder() *phaseRecorder {
	return &phaseRecorder{started: map[string]gc.Count{}, advanced: map[string]gc.Count{}}
}

func (r *phaseRecorder) Start(phase string, total, totalBytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started[phase] = gc.Count{Objects: total, Bytes: totalBytes}
}

func (r *phaseRecorder) Advance(phase string, n, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.advanced[phase]
	c.Objects += n
	c.Bytes += bytes
	r.advanced[phase] = c
}

func (r *phaseRecorder) Done(string) {}

// checkDeletePhases asserts that each delete phase announced as its total
// what it then deleted, and that this is what the plan said it would
// delete (the totals come from the plan's counts, not from a pass over
// the deletion lists: a phase announced as empty fails here).
func checkDeletePhases(t *testing.T, r *phaseRecorder, rep *gc.Report) {
	t.Helper()
	var want [2]gc.Count // metadata, NARs
	for k, c := range rep.Delete {
		if k == nixcache.KindRoot.String() {
			continue // expired markers: deleted one by one, before the phases
		}
		i := 0
		if k == nixcache.KindNAR.String() {
			i = 1
		}
		want[i].Objects += c.Objects
		want[i].Bytes += c.Bytes
	}
	for i, phase := range []string{gc.PhaseDelMeta, gc.PhaseDelNAR} {
		if want[i].Objects == 0 {
			t.Fatalf("%s: nothing to delete (test setup)", phase)
		}
		if got := r.started[phase]; got != want[i] {
			t.Errorf("%s announced %+v, the plan deletes %+v", phase, got, want[i])
		}
		if got := r.advanced[phase]; got != want[i] {
			t.Errorf("%s advanced by %+v, the plan deletes %+v", phase, got, want[i])
		}
	}
	if rep.Deleted != rep.DeleteTotal {
		t.Errorf("deleted %+v, planned %+v", rep.Deleted, rep.DeleteTotal)
	}
}

// Both kinds of plan, on a store that lists attributes (mem) and on one
// that lists keys only (file://: the sizes come from stats).
func TestDeletePhaseTotals(t *testing.T) {
	stores := map[string]func(testing.TB) *cache{"mem": newMemCache, "file": newFileCache}
	for name, newCache := range stores {
		t.Run(name+"/prune", func(t *testing.T) {
			c := newCache(t)
			w := newWorld(c)
			c.put(nixcache.ListingKey(w.garbage.hash), []byte("{}"))
			p, err := gc.NewPlan(ctx, c.st, gc.Options{Grace: -1, NoMemo: true, BatchSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			r := newPhaseRecorder()
			rep, err := p.Execute(ctx, &countFence{}, r)
			if err != nil {
				t.Fatal(err)
			}
			checkDeletePhases(t, r, rep)
		})
		t.Run(name+"/removal", func(t *testing.T) {
			c := newCache(t)
			lib := c.add("lib")
			c.root("web", c.add("app", lib))
			old := c.add("old", lib)
			c.put(nixcache.ListingKey(old.hash), []byte("{}"))
			p, err := newView(t, c, gc.Options{Grace: -1}).Removal(ctx, []nixcache.Hash{old.hash})
			if err != nil {
				t.Fatal(err)
			}
			r := newPhaseRecorder()
			rep, err := p.Execute(ctx, viewFence{}, r)
			if err != nil {
				t.Fatal(err)
			}
			checkDeletePhases(t, r, rep)
		})
	}
}

// The report's phase seconds: "meta" is the content reads alone and
// "decide" the whole decide pass. "meta" used to be the whole pass (9.5 s
// of a 10⁷-path prune that read no content at all). In a synctest bubble
// the store's injected delays are the only time that passes: a
// realisation read of 1 s (meta) and the stat of a NAR the listing missed
// (decide's missing-NAR check) of 2 s.
func TestPhaseSecondsSplitDecide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newMemCache(t)
		lib := c.add("lib")
		app := c.add("app", lib)
		c.root("web", app)
		c.put("realisations/sha256:abc!out.doi", []byte(`{"outPath":"`+app.base()+`"}`))
		if err := c.st.Delete(ctx, lib.narKey, storage.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		f := storagetest.NewFaulty(c.st)
		f.Inject(storagetest.Fault{Op: storagetest.OpGet, KeyPrefix: "realisations/", Delay: time.Second, Times: -1})
		f.Inject(storagetest.Fault{Op: storagetest.OpStat, KeyPrefix: "nar/", Delay: 2 * time.Second, Times: -1})
		p, err := gc.NewPlan(ctx, f, gc.Options{Grace: -1, DryRun: true, AllowDangling: true})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		rep := p.Report()
		if rep.MissingNARs != 1 {
			t.Fatalf("missing NARs %d, want 1 (test setup)", rep.MissingNARs)
		}
		meta, decide := rep.Phases[gc.PhaseMeta], rep.Phases[gc.PhaseDecide]
		t.Logf("phases %v", rep.Phases)
		if meta < 1 || meta >= 2 {
			t.Errorf("meta took %.3f s, want the realisation read alone (1 s)", meta)
		}
		if decide < 3 {
			t.Errorf("decide took %.3f s, want at least both delays (3 s)", decide)
		}
	})
}
