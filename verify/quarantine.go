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

// Restore moves quarantined narinfos back (all of them, or those of hashes),
// each only where no narinfo exists now: a path pushed again since keeps its
// new narinfo and its quarantined copy stays (reported in kept). It holds a
// writer lease while it writes.
func Restore(ctx context.Context, st storage.Store, hashes []nixcache.Hash, lo LockOptions) (restored, kept []string, err error) {
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
	err = underWriterLease(ctx, st, lo, func(ctx context.Context) error {
		for _, h := range todo {
			data, err := readAll(ctx, st, nixcache.QuarantineKey(h), nixcache.MaxNarInfoSize)
			if err != nil {
				return err
			}
			_, err = st.Put(ctx, nixcache.NarInfoKey(h), bytes.NewReader(data), storage.PutOptions{IfNotExist: true, ContentType: "text/x-nix-narinfo"})
			if errors.Is(err, storage.ErrPreconditionFailed) {
				kept = append(kept, nixcache.QuarantineKey(h))
				continue
			}
			if err != nil {
				return err
			}
			if err := st.Delete(ctx, nixcache.QuarantineKey(h), storage.DeleteOptions{}); err != nil {
				return err
			}
			restored = append(restored, nixcache.NarInfoKey(h))
		}
		return nil
	})
	return restored, kept, err
}
