package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Marker is one root marker as the pruner saw it.
type Marker struct {
	// Source is the store key ("gcroots/web1") or local file path.
	Source  string    `json:"source"`
	Local   bool      `json:"local,omitempty"`
	ModTime time.Time `json:"mtime"`
	Size    int64     `json:"size"`
	// Expired: older than RootMaxAge on the store's clock; it does not count
	// and Execute deletes it.
	Expired bool            `json:"expired,omitempty"`
	Paths   []nixcache.Hash `json:"-"`
	// Ignored counts lines that are not store paths.
	Ignored int `json:"ignored_lines,omitempty"`
	// etag is the version listed: an expired marker is deleted only if it
	// is still that version (a marker rewritten meanwhile is fresh).
	etag string
}

// IsLocalRootSource tells a --roots argument naming a local directory
// (absolute, ./ or ../ relative, or file://) from a store prefix.
func IsLocalRootSource(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") ||
		strings.HasPrefix(s, "file://") || s == "." || s == ".."
}

// splitRootSources separates store prefixes from local directories.
func splitRootSources(srcs []string) (prefixes, dirs []string, err error) {
	for _, s := range srcs {
		if IsLocalRootSource(s) {
			dirs = append(dirs, strings.TrimPrefix(s, "file://"))
			continue
		}
		if err := storage.ValidatePrefix(s); err != nil || s == "" {
			return nil, nil, fmt.Errorf("%w: root prefix %q: %v", ErrRootsUnavailable, s, err)
		}
		if !strings.HasSuffix(s, "/") {
			s += "/"
		}
		if !strings.HasPrefix(s, nixcache.RootsPrefix) {
			prefixes = append(prefixes, s)
		}
	}
	return prefixes, dirs, nil
}

// readAll reads at most limit bytes of key; more is an error. It sizes its
// buffer from the object's size, so a narinfo costs one allocation.
func readAll(ctx context.Context, st storage.Store, key string, limit int64) ([]byte, error) {
	data, _, err := readObject(ctx, st, key, limit, nil)
	return data, err
}

// readObject is readAll that also returns the attributes of the version read.
// It reads into buf when that is large enough (the result then aliases it).
func readObject(ctx context.Context, st storage.Store, key string, limit int64, buf []byte) ([]byte, storage.Object, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, storage.Object{}, err
	}
	defer r.Close()
	obj := r.Object()
	// A local file is complete once it gave its stat size (objects are
	// replaced, never appended to), so asking for EOF would only cost a
	// syscall per narinfo. A network body is read to EOF, or its
	// connection could not be reused.
	_, local := r.(storage.FileReader)
	data, err := readLimited(r, key, obj.Size, limit, local, buf)
	return data, obj, err
}

func readLimited(r io.Reader, key string, size, limit int64, stopAtSize bool, buf []byte) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	if int64(cap(buf)) < max(size, 0)+1 {
		buf = make([]byte, 0, max(size, 0)+1)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF || err == nil && stopAtSize && int64(len(buf)) == size {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	return buf, nil
}

// loadMarkers reads the store's StoreDir and every root marker of opts'
// root sources (gcroots/ and --roots), judging expiry at now. It is the
// root-reading step shared by a prune's plan and by `kiss roots list`.
func loadMarkers(ctx context.Context, st storage.Store, opts Options, now time.Time, conc int) (string, []Marker, error) {
	prefixes, dirs, err := splitRootSources(opts.RootSources)
	if err != nil {
		return "", nil, err
	}
	storeDir, err := StoreDir(ctx, st)
	if err != nil {
		return "", nil, err
	}
	objs, err := listMarkers(ctx, st, prefixes)
	if err != nil {
		return "", nil, err
	}
	markers, err := readMarkers(ctx, st, objs, dirs, now, opts.RootMaxAge, storeDir, conc, opts.Progress)
	if err != nil {
		return "", nil, err
	}
	return storeDir, markers, nil
}

// readMarkers reads the listed markers (expired ones are only flagged) and
// the markers in local directories. Any failure is ErrRootsUnavailable.
func readMarkers(ctx context.Context, st storage.Store, objs []storage.Object, dirs []string, now time.Time, maxAge time.Duration, storeDir string, conc int, prog Progress) ([]Marker, error) {
	prog.Start(PhaseRoots, int64(len(objs)), -1)
	defer prog.Done(PhaseRoots)
	markers := make([]Marker, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, min(conc, 32)))
	var mu sync.Mutex
	var vanished []int
	for i, o := range objs {
		markers[i] = Marker{Source: o.Key, ModTime: o.ModTime, Size: o.Size, etag: o.ETag}
		if maxAge > 0 && strings.HasPrefix(o.Key, nixcache.RootsPrefix) && now.Sub(o.ModTime) > maxAge {
			markers[i].Expired = true
			prog.Advance(PhaseRoots, 1, o.Size)
			continue
		}
		g.Go(func() error {
			defer prog.Advance(PhaseRoots, 1, o.Size)
			data, err := readAll(gctx, st, o.Key, nixcache.MaxMarkerSize)
			if errors.Is(err, storage.ErrNotFound) {
				// Removed since the listing (kiss roots rm): it no longer roots anything.
				mu.Lock()
				vanished = append(vanished, i)
				mu.Unlock()
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: marker %s: %w", ErrRootsUnavailable, o.Key, err)
			}
			paths, ignored, err := nixcache.ParseMarker(data, storeDir)
			if err != nil {
				return fmt.Errorf("%w: marker %s: %w", ErrRootsUnavailable, o.Key, err)
			}
			markers[i].Paths, markers[i].Ignored = paths, ignored
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.Sort(vanished)
	for j := len(vanished) - 1; j >= 0; j-- {
		markers = slices.Delete(markers, vanished[j], vanished[j]+1)
	}
	for _, d := range dirs {
		lm, err := readLocalMarkers(d, storeDir)
		if err != nil {
			return nil, err
		}
		markers = append(markers, lm...)
	}
	return markers, nil
}

// readLocalMarkers reads every regular file below dir (dot-names skipped,
// symlinks not followed, as the original kiss-cache did). Local markers never
// expire: whoever owns the directory manages it.
func readLocalMarkers(dir, storeDir string) ([]Marker, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: root directory: %w", ErrRootsUnavailable, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: root directory %s is not a directory", ErrRootsUnavailable, dir)
	}
	var out []Marker
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > nixcache.MaxMarkerSize {
			return fmt.Errorf("%s: larger than %d bytes", p, nixcache.MaxMarkerSize)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		paths, ignored, err := nixcache.ParseMarker(data, storeDir)
		if err != nil {
			return err
		}
		out = append(out, Marker{Source: p, Local: true, ModTime: info.ModTime(), Size: info.Size(), Paths: paths, Ignored: ignored})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: root directory %s: %w", ErrRootsUnavailable, dir, err)
	}
	return out, nil
}

// StoreDir reads StoreDir from the store's nix-cache-info (default /nix/store).
// A nix-cache-info that exists but cannot be read is ErrRootsUnavailable.
func StoreDir(ctx context.Context, st storage.Store) (string, error) {
	data, err := readAll(ctx, st, nixcache.CacheInfoKey, 1<<20)
	if errors.Is(err, storage.ErrNotFound) {
		return nixcache.DefaultStoreDir, nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrRootsUnavailable, nixcache.CacheInfoKey, err)
	}
	if d := nixcache.ParseCacheInfo(data); d != "" {
		return d, nil
	}
	return nixcache.DefaultStoreDir, nil
}

// RootName validates a marker name for AddRoot/RemoveRoot and returns its key.
func RootName(name string) (string, error) {
	name = strings.TrimPrefix(name, nixcache.RootsPrefix)
	if err := storage.ValidateKey(name); err != nil {
		return "", fmt.Errorf("root name %q: %w", name, err)
	}
	if isDotPath(name) {
		return "", fmt.Errorf("root name %q: %w: a segment starting with '.' is never read as a marker", name, storage.ErrInvalidKey)
	}
	return nixcache.RootsPrefix + name, nil
}

// AddRoot writes the marker gcroots/<name> naming paths, atomically (one Put
// of the whole body; readers see the old or the new marker, never a part).
// Every path must be a store path in storeDir ("" = /nix/store).
func AddRoot(ctx context.Context, st storage.Store, name string, paths []string, storeDir string) (storage.Object, error) {
	key, err := RootName(name)
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
	return st.Put(ctx, key, bytes.NewReader(nixcache.FormatMarker(paths)), storage.PutOptions{ContentType: "text/plain"})
}

// RemoveRoot deletes the marker gcroots/<name>; storage.ErrNotFound if absent.
func RemoveRoot(ctx context.Context, st storage.Store, name string) error {
	key, err := RootName(name)
	if err != nil {
		return err
	}
	o, err := st.Stat(ctx, key)
	if err != nil {
		return err
	}
	return st.Delete(ctx, key, storage.DeleteOptions{IfMatch: o.ETag})
}
