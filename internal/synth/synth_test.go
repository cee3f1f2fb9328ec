package synth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/kiss-cache/kiss/internal/synth"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

func gen(t testing.TB, c synth.Config) *synth.Cache {
	t.Helper()
	cache, err := synth.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

func TestDeterministic(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dump := func(seed uint64) []byte {
		var b bytes.Buffer
		c := gen(t, synth.Config{Paths: 3000, Seed: seed, Now: now})
		if err := c.Objects(func(o synth.Object) error {
			b.WriteString(o.Key + " " + o.Class.String() + " " + o.ModTime.String() + "\n")
			b.Write(o.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b, other := dump(7), dump(7), dump(8)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different caches")
	}
	if bytes.Equal(a, other) {
		t.Fatal("different seeds, same cache")
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []synth.Config{
		{Paths: 0},
		{Paths: 10},
		{Paths: 1000, GarbageFraction: 2},
		{Paths: 1000, Roots: 500},
		{Paths: 1000, RefsPerPath: -1},
	} {
		if _, err := synth.Generate(c); err == nil {
			t.Errorf("Generate(%+v): no error", c)
		}
	}
}

// TestShape checks the cache is what the benchmarks claim it is: valid
// narinfos, the requested size, about half garbage, ~10 references, and
// a reachability computed from the bytes written equal to the generator's.
func TestShape(t *testing.T) {
	testenv.SkipShort(t, "a synthetic cache of thousands of paths")
	const n = 8000
	c := gen(t, synth.Config{Paths: n, Seed: 42})
	if len(c.Paths) != n {
		t.Fatalf("%d narinfos, want %d", len(c.Paths), n)
	}
	objs := map[string]synth.Object{}
	if err := c.Objects(func(o synth.Object) error {
		if _, dup := objs[o.Key]; dup {
			t.Errorf("duplicate key %s", o.Key)
		}
		if err := storage.ValidateKey(o.Key); err != nil {
			t.Error(err)
		}
		objs[o.Key] = o
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Parse every narinfo with go-nix and walk the closure from the
	// markers' text, independently of the generator's own bookkeeping.
	infos := map[string]*narinfo.NarInfo{}
	refs := 0
	for key, o := range objs {
		if o.Type != "narinfo" {
			continue
		}
		ni, err := narinfo.Parse(bytes.NewReader(o.Body))
		if err != nil {
			t.Fatalf("%s: %v\n%s", key, err, o.Body)
		}
		if err := ni.Check(); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		base := strings.TrimPrefix(ni.StorePath, "/nix/store/")
		if h := base[:32]; h+".narinfo" != key || nixbase32.ValidateString(h) != nil {
			t.Fatalf("%s: store path %s", key, ni.StorePath)
		}
		if _, ok := objs[ni.URL]; !ok {
			t.Fatalf("%s: NAR %s not in the cache", key, ni.URL)
		}
		infos[base[:32]] = ni
		refs += len(ni.References)
	}
	if mean := float64(refs) / n; mean < 7 || mean > 13 {
		t.Errorf("mean references %.1f, want about 10", mean)
	}
	reach := map[string]bool{}
	var queue []string
	push := func(base string) {
		h := base[:32]
		if _, ok := infos[h]; ok && !reach[h] {
			reach[h] = true
			queue = append(queue, h)
		}
	}
	markers := 0
	for _, o := range objs {
		if o.Type == "marker" {
			markers++
			push(strings.TrimPrefix(strings.TrimSpace(string(o.Body)), "/nix/store/"))
		}
	}
	if markers != 8 {
		t.Errorf("%d markers, want 8", markers)
	}
	for len(queue) > 0 {
		ni := infos[queue[0]]
		queue = queue[1:]
		for _, r := range ni.References {
			push(r)
		}
		if ni.Deriver != "" {
			push(ni.Deriver)
		}
	}
	liveNars := map[string]bool{}
	for h, ni := range infos {
		want := synth.Garbage
		if reach[h] {
			want = synth.Live
			liveNars[ni.URL] = true
		}
		if got := objs[h+".narinfo"].Class; got != want && got != synth.Newborn {
			t.Fatalf("%s.narinfo: class %v, independent walk says %v", h, got, want)
		}
	}
	if frac := float64(len(reach)) / n; frac < 0.4 || frac > 0.6 {
		t.Errorf("reachable share %.2f, want about half", frac)
	}
	kinds := map[string]map[synth.Class]int{}
	shared := 0
	for key, o := range objs {
		if kinds[o.Type] == nil {
			kinds[o.Type] = map[synth.Class]int{}
		}
		kinds[o.Type][o.Class]++
		if o.Type == "nar" && (o.Class == synth.Live) != liveNars[key] {
			t.Fatalf("%s: class %v, but named by a live narinfo: %v", key, o.Class, liveNars[key])
		}
	}
	users := map[string]int{}
	for _, ni := range infos {
		users[ni.URL]++
	}
	for _, u := range users {
		if u > 1 {
			shared++
		}
	}
	if shared == 0 {
		t.Error("no shared NAR")
	}
	for _, typ := range []string{"narinfo", "nar", "ls", "log"} {
		for _, cl := range []synth.Class{synth.Live, synth.Garbage, synth.Newborn} {
			if kinds[typ][cl] == 0 {
				t.Errorf("no %v %s objects", cl, typ)
			}
		}
	}
	drvs := 0
	for _, ni := range infos {
		if strings.HasSuffix(ni.StorePath, ".drv") && reach[strings.TrimPrefix(ni.StorePath, "/nix/store/")[:32]] {
			drvs++
		}
	}
	if drvs == 0 {
		t.Error("no reachable .drv narinfo")
	}
}

func TestConsistentNARs(t *testing.T) {
	c := gen(t, synth.Config{Paths: 500, Seed: 3, ConsistentNARs: true})
	bodies := map[string][]byte{}
	var infos [][]byte
	_ = c.Objects(func(o synth.Object) error {
		switch o.Type {
		case "nar":
			bodies[o.Key] = o.Body
		case "narinfo":
			infos = append(infos, o.Body)
		}
		return nil
	})
	for _, b := range infos {
		ni, err := narinfo.Parse(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		body := bodies[ni.URL]
		sum := sha256.Sum256(body)
		if ni.FileHash.String() != "sha256:"+nixbase32.EncodeToString(sum[:]) || ni.FileSize != uint64(len(body)) {
			t.Fatalf("%s: FileHash %s FileSize %d do not describe the %d-byte body", ni.StorePath, ni.FileHash, ni.FileSize, len(body))
		}
	}
}

// TestWriteDirAndCheck writes through the fast path, reads it back through
// the file driver, checks mtimes, and has Check notice a deleted live key.
func TestWriteDirAndCheck(t *testing.T) {
	testenv.SkipShort(t, "a synthetic cache of thousands of paths")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	man := t.TempDir()
	now := time.Now()
	c := gen(t, synth.Config{Paths: 2000, Seed: 5, Now: now, Age: 48 * time.Hour})
	if err := c.WriteDir(ctx, dir, 4, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteManifest(man); err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	if err := c.Objects(func(o synth.Object) error {
		n++
		r, err := st.Get(ctx, o.Key)
		if err != nil {
			return err
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, o.Body) {
			t.Fatalf("%s: body differs", o.Key)
		}
		age := now.Sub(r.Object().ModTime)
		switch o.Class {
		case synth.Newborn:
			if age > time.Minute {
				t.Fatalf("%s newborn is %v old", o.Key, age)
			}
		default:
			if o.Type != "marker" && o.Type != "cache-info" && age < 48*time.Hour {
				t.Fatalf("%s is only %v old", o.Key, age)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reach, err := synth.ReadKeys(filepath.Join(man, synth.ReachableFile))
	if err != nil {
		t.Fatal(err)
	}
	res, err := synth.ReadAll(ctx, st, reach, 4)
	if err != nil || res.Objects != len(reach) || res.Bytes < int64(300*len(reach)) {
		t.Fatalf("ReadAll: %+v, %v", res, err)
	}
	chk, err := synth.Check(ctx, st, man, 4)
	if err != nil || len(chk.LiveMissing) != 0 || chk.GarbageLeft != chk.GarbageTotal || chk.GarbageTotal == 0 {
		t.Fatalf("Check before: %+v, %v", chk, err)
	}
	// Simulate a prune that deletes every garbage key and, wrongly, one live NAR.
	garbage, _ := synth.ReadKeys(filepath.Join(man, synth.GarbageFile))
	for _, k := range garbage {
		if err := st.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	live, _ := synth.ReadKeys(filepath.Join(man, synth.LiveFile))
	var victim string
	for _, k := range live {
		if strings.HasPrefix(k, "nar/") {
			victim = k
			break
		}
	}
	if err := os.Remove(filepath.Join(dir, victim)); err != nil {
		t.Fatal(err)
	}
	chk, err = synth.Check(ctx, st, man, 4)
	if err != nil || chk.GarbageLeft != 0 || len(chk.LiveMissing) != 1 || chk.LiveMissing[0] != victim {
		t.Fatalf("Check after: %+v, %v (victim %s)", chk, err, victim)
	}
}

// TestWriteStore fills a store through the Store interface (mem://).
func TestWriteStore(t *testing.T) {
	ctx := context.Background()
	st := storage.NewMem(time.Now)
	c := gen(t, synth.Config{Paths: 1000, Seed: 9})
	if err := c.WriteStore(ctx, st, 8, nil); err != nil {
		t.Fatal(err)
	}
	want := 0
	_ = c.Objects(func(synth.Object) error { want++; return nil })
	got := 0
	for _, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != want {
		t.Fatalf("store holds %d objects, want %d", got, want)
	}
}
