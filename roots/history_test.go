package roots_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

func storePath(i int) string {
	return fmt.Sprintf("/nix/store/%032d-gen%d", i, i)
}

// TestPinHistory: --keep N keeps the marker's last N values (the current one
// and N-1 generations), an unchanged value makes no generation, and every
// value kept is read by Load as a root.
func TestPinHistory(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	st := storage.NewMem(func() time.Time { return now })
	for i := 1; i <= 5; i++ {
		if _, _, err := roots.AddKeeping(ctx, st, "web1", []string{storePath(i)}, "", 3); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Hour)
	}
	// Writing the current value again makes no generation.
	if _, trimmed, err := roots.AddKeeping(ctx, st, "web1", []string{storePath(5)}, "", 3); err != nil || len(trimmed) != 0 {
		t.Fatalf("same value again: trimmed %v, %v", trimmed, err)
	}
	gens, err := roots.Generations(ctx, st, "gcroots/web1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range gens {
		got = append(got, g.Object.Key)
	}
	if want := []string{"gcroots/web1~3", "gcroots/web1~4"}; !slices.Equal(got, want) {
		t.Fatalf("generations %v, want %v", got, want)
	}
	_, markers, err := roots.Load(ctx, st, roots.LoadOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]string{}
	for _, m := range markers {
		for _, h := range m.Paths {
			named[m.Source] = h.String()
		}
	}
	for key, i := range map[string]int{"gcroots/web1": 5, "gcroots/web1~4": 4, "gcroots/web1~3": 3} {
		if want := fmt.Sprintf("%032d", i); named[key] != want {
			t.Errorf("%s roots %q, want %s", key, named[key], want)
		}
	}
	if len(named) != 3 {
		t.Errorf("markers %v, want the marker and two generations", named)
	}

	// A generation ages with its marker: old generations of a fresh marker
	// do not expire; once the marker is old, they expire with it.
	now = now.Add(30 * time.Minute)
	_, markers, err = roots.Load(ctx, st, roots.LoadOptions{Now: now, MaxAge: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range markers {
		if m.Expired {
			t.Errorf("%s expired while gcroots/web1 is fresh", m.Source)
		}
	}
	now = now.Add(3 * time.Hour)
	_, markers, _ = roots.Load(ctx, st, roots.LoadOptions{Now: now, MaxAge: 2 * time.Hour})
	for _, m := range markers {
		if !m.Expired {
			t.Errorf("%s did not expire with its marker", m.Source)
		}
	}

	// --keep 1 keeps no history; names ending in ~N are generations'.
	if _, trimmed, err := roots.AddKeeping(ctx, st, "web1", []string{storePath(6)}, "", 1); err != nil || len(trimmed) != 2 {
		t.Fatalf("keep 1: trimmed %v, %v; want both generations gone", trimmed, err)
	}
	if _, _, err := roots.AddKeeping(ctx, st, "web1~2", []string{storePath(1)}, "", 0); err == nil || !strings.Contains(err.Error(), "generations") {
		t.Errorf("writing a generation's name as a marker: %v", err)
	}
	if m, n, ok := nixcache.ParseGenerationKey("gcroots/ci/main~12"); !ok || m != "gcroots/ci/main" || n != 12 {
		t.Errorf("ParseGenerationKey: %q %d %v", m, n, ok)
	}
	for _, k := range []string{"gcroots/web~", "gcroots/web~01", "gcroots/web~x", "gcroots/~3", "gcroots/a/~3"} {
		if _, _, ok := nixcache.ParseGenerationKey(k); ok {
			t.Errorf("%q parsed as a generation", k)
		}
	}
}

// TestPinHistoryLastGenerationNumber: a generation numbered math.MaxInt
// (written through the gateway, say) has no next number. Saving the next
// generation must not wrap round to NAME~-9223372036854775808, which is no
// generation but a marker of its own: never trimmed, aging on its own, one
// more each write, so --keep N kept more than N values.
func TestPinHistoryLastGenerationNumber(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	st := storage.NewMem(func() time.Time { return now })
	if _, err := roots.Add(ctx, st, "web1", []string{storePath(1)}, ""); err != nil {
		t.Fatal(err)
	}
	last := nixcache.GenerationKey("gcroots/web1", math.MaxInt)
	if _, err := roots.Put(ctx, st, last, nixcache.FormatMarker([]string{storePath(0)}), "", storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		_, _, err := roots.AddKeeping(ctx, st, "web1", []string{storePath(i)}, "", 2)
		if err == nil {
			t.Errorf("write %d: no error, want the generation numbers refused as used up", i)
		}
	}
	var keys []string
	for o, err := range st.List(ctx, nixcache.RootsPrefix) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
	if want := []string{"gcroots/web1", last}; !slices.Equal(keys, want) {
		t.Fatalf("markers %v, want %v", keys, want)
	}
}
