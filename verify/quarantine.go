package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// ErrLease wraps a failure to take the writer lease that moving narinfos
// needs (lockproto.IsLocked when a prune held the lock past the wait).
var ErrLease = errors.New("writer lease")

// LockOptions say how to take the writer lease for quarantine and restore.
type LockOptions struct {
	Wait  time.Duration
	Owner string
}

// underWriterLease runs f holding a writer lease, as a push would: moving
// narinfos must not land in the middle of a prune.
func underWriterLease(ctx context.Context, st storage.Store, lo LockOptions, f func(context.Context) error) error {
	lease, err := lockproto.AcquireWriter(ctx, st, "verify", lockproto.Options{Wait: lo.Wait, Owner: lo.Owner})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLease, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = lease.Release(rctx)
	}()
	if err := f(lease.Context()); err != nil {
		if lease.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("%w: %w", lockproto.ErrLeaseLost, err)
		}
		return err
	}
	return nil
}

// quarantine moves the narinfo of h to nixcache.QuarantineKey(h) if its NAR
// is (still) missing. moved is false when there was nothing to move.
func quarantine(ctx context.Context, st storage.Store, storeDir string, h nixcache.Hash) (moved bool, err error) {
	key := nixcache.NarInfoKey(h)
	r, err := st.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	etag := r.Object().ETag
	data, err := readAllFrom(r, nixcache.MaxNarInfoSize)
	if err != nil {
		return false, err
	}
	// Re-pushed since the check? Then it is whole again.
	if ni, err := nixcache.ParseNarInfo(data, storeDir); err == nil {
		if nk, ok := ni.NarKey(); ok {
			if _, err := st.Stat(ctx, nk); err == nil {
				return false, nil
			}
		}
	}
	if _, err := st.Put(ctx, nixcache.QuarantineKey(h), bytes.NewReader(data), storage.PutOptions{ContentType: "text/x-nix-narinfo"}); err != nil {
		return false, err
	}
	err = st.Delete(ctx, key, storage.DeleteOptions{IfMatch: etag})
	if errors.Is(err, storage.ErrPreconditionFailed) || errors.Is(err, storage.ErrNotFound) {
		// Replaced or deleted meanwhile: the new one is not ours to move.
		return false, st.Delete(ctx, nixcache.QuarantineKey(h), storage.DeleteOptions{})
	}
	return err == nil, err
}

// Kept is a quarantined narinfo that Restore left where it is, and why.
type Kept struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Restore moves quarantined narinfos back (all of them, or those of hashes),
// each only where it would be whole again: no narinfo exists for the path
// now (a path pushed again since keeps its new narinfo), and its NAR and
// every reference are present — putting back a narinfo whose NAR is still
// missing would only bring back the error quarantine removed (invariant I2).
// Anything left in quarantine is reported in kept, with the reason. It
// holds a writer lease while it writes.
func Restore(ctx context.Context, st storage.Store, hashes []nixcache.Hash, lo LockOptions) (restored []string, kept []Kept, err error) {
	var todo []nixcache.Hash
	for o, err := range st.List(ctx, nixcache.QuarantinePrefix) {
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", nixcache.QuarantinePrefix, err)
		}
		if h, ok := nixcache.QuarantinedHash(o.Key); ok && (len(hashes) == 0 || slices.Contains(hashes, h)) {
			todo = append(todo, h)
		}
	}
	if len(todo) == 0 {
		return nil, nil, nil
	}
	storeDir, err := roots.StoreDir(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	err = underWriterLease(ctx, st, lo, func(ctx context.Context) error {
		for _, h := range todo {
			qkey := nixcache.QuarantineKey(h)
			data, err := readAll(ctx, st, qkey, nixcache.MaxNarInfoSize)
			if err != nil {
				return err
			}
			why, err := incomplete(ctx, st, storeDir, h, data)
			if err != nil {
				return err
			}
			if why != "" {
				kept = append(kept, Kept{Key: qkey, Reason: why})
				continue
			}
			_, err = st.Put(ctx, nixcache.NarInfoKey(h), bytes.NewReader(data), storage.PutOptions{IfNotExist: true, ContentType: "text/x-nix-narinfo"})
			if errors.Is(err, storage.ErrPreconditionFailed) {
				kept = append(kept, Kept{Key: qkey, Reason: "a narinfo for the path exists again"})
				continue
			}
			if err != nil {
				return err
			}
			if err := st.Delete(ctx, qkey, storage.DeleteOptions{}); err != nil {
				return err
			}
			restored = append(restored, nixcache.NarInfoKey(h))
		}
		return nil
	})
	return restored, kept, err
}

// incomplete says why the quarantined narinfo data of h cannot go back yet
// ("" when it can): it does not parse, its NAR is missing, or a reference's
// narinfo is missing.
func incomplete(ctx context.Context, st storage.Store, storeDir string, h nixcache.Hash, data []byte) (string, error) {
	ni, err := nixcache.ParseNarInfo(data, storeDir)
	if err != nil {
		return fmt.Sprintf("does not parse: %v", err), nil
	}
	nk, ok := ni.NarKey()
	if !ok {
		return fmt.Sprintf("URL %q names no NAR", ni.URL), nil
	}
	present := func(key string) (bool, error) {
		_, err := st.Stat(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	if ok, err := present(nk); err != nil || !ok {
		return "its NAR " + nk + " is still missing", err
	}
	for _, ref := range ni.References {
		if ref == h {
			continue
		}
		if ok, err := present(nixcache.NarInfoKey(ref)); err != nil || !ok {
			return "its reference " + nixcache.NarInfoKey(ref) + " is missing", err
		}
	}
	return "", nil
}
