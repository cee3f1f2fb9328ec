package roots

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Pin history: a marker can keep its last values as generations
// (nixcache.GenerationKey: gcroots/web1~7), so a deployment channel can roll
// back. A generation is an ordinary marker to the pruner, which keeps what
// it names; its age, for --root-max-age, is its current marker's.

// ErrGenerationName: a marker name that is a generation's (NAME~N) cannot be
// written as a marker of its own.
var ErrGenerationName = errors.New("names ending in ~N are generations of another marker")

// Generation is one kept previous value of a marker.
type Generation struct {
	N      int
	Object storage.Object
}

// Generations lists the generations of the marker at key, oldest first.
func Generations(ctx context.Context, st storage.Store, key string) ([]Generation, error) {
	var out []Generation
	for o, err := range st.List(ctx, key+nixcache.GenerationSep) {
		if err != nil {
			return nil, fmt.Errorf("listing the generations of %s: %w", key, err)
		}
		if m, n, ok := nixcache.ParseGenerationKey(o.Key); ok && m == key {
			out = append(out, Generation{N: n, Object: o})
		}
	}
	slices.SortFunc(out, func(a, b Generation) int { return a.N - b.N })
	return out, nil
}

// WritableKey is Key for a marker AddKeeping may write: also refused (with
// ErrGenerationName) is a generation's name, which only AddKeeping itself
// writes, as the history of another marker. Callers that check before they
// take a lease call it.
func WritableKey(name string) (string, error) {
	key, err := Key(name)
	if err != nil {
		return "", err
	}
	if _, _, ok := nixcache.ParseGenerationKey(key); ok {
		return "", fmt.Errorf("root name %q: %w: %w", name, storage.ErrInvalidKey, ErrGenerationName)
	}
	return key, nil
}

// AddKeeping is Add that keeps the marker's last keep values (keep ≤ 0:
// exactly Add, no history kept or trimmed): when the marker exists with
// another body, that body first becomes a new generation; then the marker
// is written; then generations beyond the newest keep-1 are deleted, oldest
// first, each only as the version listed. At every moment every value to
// keep is named by some marker. Call it under a writer lease, as Add.
// trimmed lists the generations deleted.
func AddKeeping(ctx context.Context, st storage.Store, name string, paths []string, storeDir string, keep int) (o storage.Object, trimmed []string, err error) {
	key, err := WritableKey(name)
	if err != nil {
		return storage.Object{}, nil, err
	}
	if keep > 1 {
		if err := saveGeneration(ctx, st, key, nixcache.FormatMarker(paths), storeDir); err != nil {
			return storage.Object{}, nil, err
		}
	}
	if o, err = Add(ctx, st, name, paths, storeDir); err != nil || keep <= 0 {
		return o, nil, err
	}
	gens, err := Generations(ctx, st, key)
	if err != nil {
		return o, nil, err
	}
	for _, g := range gens[:max(0, len(gens)-(keep-1))] {
		err := st.Delete(ctx, g.Object.Key, storage.DeleteOptions{IfMatch: g.Object.ETag})
		if err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrPreconditionFailed) {
			return o, trimmed, fmt.Errorf("trimming generation %s: %w", g.Object.Key, err)
		}
		trimmed = append(trimmed, g.Object.Key)
	}
	return o, trimmed, nil
}

// saveGeneration copies the marker at key to its next generation, unless it
// is absent or already says next.
func saveGeneration(ctx context.Context, st storage.Store, key string, next []byte, storeDir string) error {
	r, err := st.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cur, err := readBounded(r, key)
	r.Close()
	if err != nil || bytes.Equal(cur, next) {
		return err
	}
	gens, err := Generations(ctx, st, key)
	if err != nil {
		return err
	}
	n := 1
	if len(gens) > 0 {
		n = gens[len(gens)-1].N + 1
	}
	for range 8 { // another writer may take the same number: take the next
		if n <= 0 {
			// Past math.MaxInt, NAME~-… would be no generation but a
			// marker of its own, never trimmed: refuse before writing.
			return fmt.Errorf("saving a generation of %s: generation numbers are used up (the newest is %s); delete or rename it", key, nixcache.GenerationKey(key, gens[len(gens)-1].N))
		}
		_, err := Put(ctx, st, nixcache.GenerationKey(key, n), cur, storeDir, storage.PutOptions{IfNotExist: true})
		if !errors.Is(err, storage.ErrPreconditionFailed) {
			return err
		}
		n++
	}
	return fmt.Errorf("saving a generation of %s: numbers %d… kept being taken", key, n-8)
}

// ageOf is the time a marker's age is judged from: a generation's is its
// current marker's (when that is listed), so the history of a live marker
// lives as long as it does.
func ageOf(o storage.Object, current map[string]time.Time) time.Time {
	if m, _, ok := nixcache.ParseGenerationKey(o.Key); ok {
		if t, ok := current[m]; ok {
			return t
		}
	}
	return o.ModTime
}
