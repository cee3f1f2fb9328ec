package roots

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// ContentType is what markers are stored and served as.
var ContentType = nixcache.KindRoot.Rules().ContentType

// StoreDir reads StoreDir from the store's nix-cache-info (default
// /nix/store). A nix-cache-info that exists but cannot be read is
// ErrUnavailable: a guessed store directory would make every marker name
// nothing.
func StoreDir(ctx context.Context, st storage.Store) (string, error) {
	r, err := st.Get(ctx, nixcache.CacheInfoKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nixcache.DefaultStoreDir, nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUnavailable, nixcache.CacheInfoKey, err)
	}
	defer r.Close()
	data, err := readBounded(r, nixcache.CacheInfoKey)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUnavailable, nixcache.CacheInfoKey, err)
	}
	if d := nixcache.ParseCacheInfo(data); d != "" {
		return d, nil
	}
	return nixcache.DefaultStoreDir, nil
}

// Key validates a marker name ("web1", "ci/main", "gcroots/web1") and
// returns its key. A name the pruner would not read as a marker is
// storage.ErrInvalidKey (and nixcache.ErrInvalidMarkerName).
func Key(name string) (string, error) {
	key, err := nixcache.MarkerKey(name)
	if err != nil {
		return "", fmt.Errorf("root name: %w: %w", storage.ErrInvalidKey, err)
	}
	if err := storage.ValidateKey(key); err != nil {
		return "", fmt.Errorf("root name %q: %w", name, err)
	}
	return key, nil
}

// Put writes the marker body at key, and is the only way markers are
// written: it refuses a key the pruner would not read as a marker and a
// body it would not read as a root (nixcache.ValidateMarker), so a writer
// can never believe a path rooted that is not. The write is one atomic Put
// (readers see the old or the new marker, never a part of one); opts may
// make it conditional.
func Put(ctx context.Context, st storage.Store, key string, body []byte, storeDir string, opts storage.PutOptions) (storage.Object, error) {
	if _, err := Key(key); err != nil {
		return storage.Object{}, err
	}
	if err := nixcache.ValidateMarker(body, storeDir); err != nil {
		return storage.Object{}, fmt.Errorf("marker %s: %w", key, err)
	}
	opts.ContentType = ContentType
	return st.Put(ctx, key, bytes.NewReader(body), opts)
}

// Add writes the marker called name naming paths (store paths in
// storeDir, "" = /nix/store).
func Add(ctx context.Context, st storage.Store, name string, paths []string, storeDir string) (storage.Object, error) {
	key, err := Key(name)
	if err != nil {
		return storage.Object{}, err
	}
	if len(paths) == 0 {
		return storage.Object{}, fmt.Errorf("root %s: no store paths given", name)
	}
	for _, p := range paths {
		if _, _, err := nixcache.ParseStorePath(p, storeDir); err != nil {
			return storage.Object{}, fmt.Errorf("root %s: %w", name, err)
		}
	}
	return Put(ctx, st, key, nixcache.FormatMarker(paths), storeDir, storage.PutOptions{})
}

// Remove deletes the marker called name, only as the version it finds (a
// marker replaced meanwhile fails with storage.ErrPreconditionFailed);
// storage.ErrNotFound if absent.
func Remove(ctx context.Context, st storage.Store, name string) error {
	key, err := Key(name)
	if err != nil {
		return err
	}
	o, err := st.Stat(ctx, key)
	if err != nil {
		return err
	}
	return st.Delete(ctx, key, storage.DeleteOptions{IfMatch: o.ETag})
}

// Expire deletes an expired marker, only if it is still the version Load
// listed: a marker rewritten since is fresh (storage.ErrPreconditionFailed).
func Expire(ctx context.Context, st storage.Store, m Marker) error {
	if !m.Expired || m.Local || m.ETag == "" {
		return fmt.Errorf("marker %s: not an expired marker of the store", m.Source)
	}
	return st.Delete(ctx, m.Source, storage.DeleteOptions{IfMatch: m.ETag})
}
