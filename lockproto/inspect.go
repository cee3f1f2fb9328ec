package lockproto

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/kiss-cache/kiss/storage"
)

// listHolders reads every lease under LockPrefix accepted by keep, judged
// on the store's clock. Leases deleted while listing are skipped.
func listHolders(ctx context.Context, st storage.Store, j Judging, keep func(key string) bool) ([]Holder, error) {
	var keys []string
	for obj, err := range st.List(ctx, LockPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", LockPrefix, err)
		}
		if strings.Contains(strings.TrimPrefix(obj.Key, LockPrefix), "/") {
			continue // not a lease (nothing nests under .lock/)
		}
		if keep == nil || keep(obj.Key) {
			keys = append(keys, obj.Key)
		}
	}
	now, err := storeNow(ctx, st)
	if err != nil {
		return nil, err
	}
	out := make([]Holder, 0, len(keys))
	for _, k := range keys {
		h, err := readHolderRetry(ctx, st, k)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		judge(&h, now, j)
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind == KindPrune
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// List returns every lease in the store (prune first), with age and
// staleness judged by j on the store's clock.
func List(ctx context.Context, st storage.Store, j Judging) ([]Holder, error) {
	return listHolders(ctx, st, j.withDefaults(), nil)
}

// Prune reads the prune lease and judges it by j as a writer taking a
// lease does. storage.ErrNotFound if there is none. The gateway refuses
// writer leases with it.
func Prune(ctx context.Context, st storage.Store, j Judging) (Holder, error) {
	h, err := readHolderRetry(ctx, st, PruneKey)
	if err != nil {
		return Holder{}, err
	}
	now, err := st.Now(ctx)
	if err != nil {
		return Holder{}, fmt.Errorf("store clock: %w", err)
	}
	judge(&h, now, j)
	return h, nil
}

// Break deletes one lease, named by its key or its name under LockPrefix
// ("prune", "<job>.<nonce>"). Without force it refuses a lease that j
// judges fresh (ErrNotStale). The delete is conditional on the ETag that
// was judged, so a lease refreshed meanwhile survives (ErrNotStale).
// Returns what was broken.
func Break(ctx context.Context, st storage.Store, name string, j Judging, force bool) (Holder, error) {
	key := name
	if !strings.HasPrefix(key, LockPrefix) {
		key = LockPrefix + name
	}
	if err := storage.ValidateKey(key); err != nil || strings.Contains(strings.TrimPrefix(key, LockPrefix), "/") {
		return Holder{}, fmt.Errorf("%w: %q is not a lease name", storage.ErrInvalidKey, name)
	}
	h, err := readHolder(ctx, st, key)
	if err != nil {
		return Holder{}, err
	}
	now, err := storeNow(ctx, st)
	if err != nil {
		return Holder{}, err
	}
	judge(&h, now, j)
	if !h.Stale && !force {
		return h, fmt.Errorf("%w: %s (use --force to break it anyway)", ErrNotStale, h)
	}
	if err := st.Delete(ctx, key, storage.DeleteOptions{IfMatch: h.ETag}); err != nil {
		if errors.Is(err, storage.ErrPreconditionFailed) {
			return h, fmt.Errorf("%w: %s changed while breaking it (refreshed by its holder)", ErrNotStale, key)
		}
		return h, err
	}
	return h, nil
}
