package roots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// ErrUnavailable: the roots could not all be read (a listing failed, a
// marker could not be read or is too large, an entry under gcroots/ is not
// a root, a --roots directory is missing). A caller that deletes must stop.
var ErrUnavailable = errors.New("gc roots unavailable")

// NoStorePath is the Problem of a marker that names no store path.
const NoStorePath = "names no store path"

// ForeignLines is the Problem of a marker with lines that are neither a
// store path, a comment nor blank: a write cut short mid-path ("/nix/st")
// reads that way, and what the line meant to root would go.
const ForeignLines = "has lines that are not store paths"

// Marker is one root marker as the registry read it.
type Marker struct {
	// Source is the store key ("gcroots/web1") or local file path.
	Source string `json:"source"`
	Local  bool   `json:"local,omitempty"`
	// Link is the target of a symlinked marker, as written.
	Link    string    `json:"link,omitempty"`
	ModTime time.Time `json:"mtime"`
	Size    int64     `json:"size"`
	// Expired: older than the maximum age on the store's clock; it does not
	// count, and the pruner deletes it.
	Expired bool            `json:"expired,omitempty"`
	Paths   []nixcache.Hash `json:"-"`
	// Ignored counts lines that are not store paths (nor blank, nor "#"
	// comments).
	Ignored int `json:"ignored_lines,omitempty"`
	// Problem says why a marker that was read may not root what it was
	// meant to (NoStorePath, ForeignLines): the pruner refuses to run.
	Problem string `json:"problem,omitempty"`
	// ETag is the version listed: an expired marker is deleted only if it
	// is still that version (a marker rewritten meanwhile is fresh).
	ETag string `json:"-"`
}

// Progress receives the count of markers read (gc.Progress satisfies it).
type Progress interface {
	Start(phase string, total, totalBytes int64)
	Advance(phase string, n, bytes int64)
	Done(phase string)
}

// Phase is the name Load reports its progress under.
const Phase = "roots"

type noProgress struct{}

func (noProgress) Start(string, int64, int64)   {}
func (noProgress) Advance(string, int64, int64) {}
func (noProgress) Done(string)                  {}

// LoadOptions say which roots to read and how.
type LoadOptions struct {
	// Sources are extra root sources besides gcroots/: store prefixes
	// ("releases/") or local directories ("/var/lib/roots", "./roots",
	// "file:///x"); see IsLocalSource.
	Sources []string
	// MaxAge: markers under gcroots/ older than this at Now are flagged
	// Expired and not read. 0: markers never expire.
	MaxAge time.Duration
	// Now is the store's clock (expiry is judged on it).
	Now time.Time
	// Concurrency of marker reads (at most 32; 0: 8).
	Concurrency int
	Progress    Progress
}

// IsLocalSource tells a --roots argument naming a local directory
// (absolute, ./ or ../ relative, or file://) from a store prefix.
func IsLocalSource(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") ||
		strings.HasPrefix(s, "file://") || s == "." || s == ".."
}

// splitSources separates store prefixes from local directories.
func splitSources(srcs []string) (prefixes, dirs []string, err error) {
	for _, s := range srcs {
		if IsLocalSource(s) {
			dirs = append(dirs, strings.TrimPrefix(s, "file://"))
			continue
		}
		if err := storage.ValidatePrefix(s); err != nil || s == "" {
			return nil, nil, fmt.Errorf("%w: root prefix %q: %v", ErrUnavailable, s, err)
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

// Load reads the store's StoreDir and every root: the markers under
// gcroots/ and those of opts.Sources. Any marker it cannot read is
// ErrUnavailable; markers that name no store path come back with Problem
// set, for the caller to judge.
func Load(ctx context.Context, st storage.Store, opts LoadOptions) (string, []Marker, error) {
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	prefixes, dirs, err := splitSources(opts.Sources)
	if err != nil {
		return "", nil, err
	}
	storeDir, err := StoreDir(ctx, st)
	if err != nil {
		return "", nil, err
	}
	if err := CheckDir(ctx, st); err != nil {
		return "", nil, err
	}
	objs, err := list(ctx, st, prefixes)
	if err != nil {
		return "", nil, err
	}
	markers, err := read(ctx, st, objs, opts, storeDir)
	if err != nil {
		return "", nil, err
	}
	links, err := readSpecial(ctx, st, append([]string{nixcache.RootsPrefix}, prefixes...), storeDir)
	if err != nil {
		return "", nil, err
	}
	markers = append(markers, links...)
	for _, d := range dirs {
		lm, err := readLocalDir(d, storeDir)
		if err != nil {
			return "", nil, err
		}
		markers = append(markers, lm...)
	}
	return storeDir, markers, nil
}

// CheckDir refuses a store where "gcroots" is an object (a regular file):
// its markers, if any, would be invisible, and no marker or lease could be
// written. Callers that write under gcroots/ check it first, for a clear
// message instead of a failed put.
func CheckDir(ctx context.Context, st storage.Store) error {
	name := strings.TrimSuffix(nixcache.RootsPrefix, "/")
	// Only an object there is a problem: any other answer (absent, or a
	// gateway that serves no such key) leaves the listing to judge.
	if _, err := st.Stat(ctx, name); err == nil {
		return fmt.Errorf("%w: %s in %s is a file, not the directory of root markers (markers are %sNAME); move it away", ErrUnavailable, name, st.URL(), nixcache.RootsPrefix)
	}
	return nil
}

// list lists the marker objects: everything under gcroots/ and the extra
// prefixes that is a marker by name (no dot segment: .lock/, temp files).
func list(ctx context.Context, st storage.Store, prefixes []string) ([]storage.Object, error) {
	var out []storage.Object
	seen := map[string]bool{}
	for _, p := range append([]string{nixcache.RootsPrefix}, prefixes...) {
		for o, err := range st.List(ctx, p) {
			if err != nil {
				return nil, fmt.Errorf("%w: listing %s: %w", ErrUnavailable, p, err)
			}
			if !isMarkerUnder(p, o.Key) || seen[o.Key] {
				continue
			}
			seen[o.Key] = true
			out = append(out, o)
		}
	}
	return out, nil
}

// isMarkerUnder: key, listed under prefix, is a marker there.
func isMarkerUnder(prefix, key string) bool {
	return nixcache.IsMarkerKey(nixcache.RootsPrefix + strings.TrimPrefix(key, prefix))
}

// read reads the listed markers (expired ones are only flagged).
func read(ctx context.Context, st storage.Store, objs []storage.Object, opts LoadOptions, storeDir string) ([]Marker, error) {
	prog := opts.Progress
	prog.Start(Phase, int64(len(objs)), -1)
	defer prog.Done(Phase)
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 8
	}
	markers := make([]Marker, len(objs))
	current := map[string]time.Time{} // mtimes of listed markers, for their generations' age
	for _, o := range objs {
		current[o.Key] = o.ModTime
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(conc, 32))
	var mu sync.Mutex
	var vanished []int
	for i, o := range objs {
		markers[i] = Marker{Source: o.Key, ModTime: o.ModTime, Size: o.Size, ETag: o.ETag}
		if opts.MaxAge > 0 && strings.HasPrefix(o.Key, nixcache.RootsPrefix) && opts.Now.Sub(ageOf(o, current)) > opts.MaxAge {
			markers[i].Expired = true
			prog.Advance(Phase, 1, o.Size)
			continue
		}
		g.Go(func() error {
			defer prog.Advance(Phase, 1, o.Size)
			data, err := readObject(gctx, st, o.Key)
			if errors.Is(err, storage.ErrNotFound) {
				// Removed since the listing (kiss roots rm): it no longer roots anything.
				mu.Lock()
				vanished = append(vanished, i)
				mu.Unlock()
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: marker %s: %w", ErrUnavailable, o.Key, err)
			}
			return markers[i].parse(data, storeDir)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.Sort(vanished)
	for j := len(vanished) - 1; j >= 0; j-- {
		markers = slices.Delete(markers, vanished[j], vanished[j]+1)
	}
	return markers, nil
}

// parse fills m from a marker body.
func (m *Marker) parse(data []byte, storeDir string) error {
	paths, ignored, err := nixcache.ParseMarker(data, storeDir)
	if err != nil {
		return fmt.Errorf("%w: marker %s: %w", ErrUnavailable, m.Source, err)
	}
	m.Paths, m.Ignored = paths, ignored
	switch {
	case len(paths) == 0:
		m.Problem = NoStorePath
	case ignored > 0:
		m.Problem = fmt.Sprintf("%s (%d of %d)", ForeignLines, ignored, ignored+len(paths))
	}
	return nil
}

// readObject reads a marker object, at most nixcache.MaxMarkerSize bytes.
func readObject(ctx context.Context, st storage.Store, key string) ([]byte, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readBounded(r, key)
}

func readBounded(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, nixcache.MaxMarkerSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > nixcache.MaxMarkerSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", nixcache.ErrInvalidMarker, name, nixcache.MaxMarkerSize)
	}
	return data, nil
}

// readSpecial reads the entries under the root prefixes that are not
// objects (file:// only: symlinks, pipes, …). Symlinks become markers;
// anything that cannot be read as one is ErrUnavailable.
func readSpecial(ctx context.Context, st storage.Store, prefixes []string, storeDir string) ([]Marker, error) {
	sl, ok := storage.As[storage.SpecialLister](st)
	if !ok {
		return nil, nil
	}
	var out []Marker
	for _, p := range prefixes {
		for sp, err := range sl.ListSpecial(ctx, p) {
			if err != nil {
				return nil, fmt.Errorf("%w: listing %s: %w", ErrUnavailable, p, err)
			}
			if !isMarkerUnder(p, sp.Key) {
				continue // under a dot segment, like every object there
			}
			m, err := linkMarker(sp.Key, sp.Path, sp.Mode, sp.Target, sp.ModTime, storeDir)
			if err != nil {
				return nil, err
			}
			m.Local = false
			out = append(out, m)
		}
	}
	return out, nil
}

// linkMarker reads a non-regular entry at path (a symlink, or something
// that cannot be a marker) as a root.
func linkMarker(source, path string, mode os.FileMode, target string, mtime time.Time, storeDir string) (Marker, error) {
	m := Marker{Source: source, Local: true, Link: target, ModTime: mtime}
	if mode&os.ModeSymlink == 0 {
		return m, fmt.Errorf("%w: %s is a %s, not a marker (markers are files, or symlinks to a store path or to a marker file)", ErrUnavailable, source, kindOf(mode))
	}
	// A link to a store path roots it by name: Nix's gcroots format, and
	// the path need not exist on this host.
	if h, _, err := nixcache.ParseStorePath(target, storeDir); err == nil {
		m.Paths = []nixcache.Hash{h}
		return m, nil
	}
	// Otherwise it must name one marker file.
	resolved := target
	if !filepath.IsAbs(resolved) {
		resolved = filepath.Join(filepath.Dir(path), resolved)
	}
	data, err := readLinkedFile(resolved)
	if err != nil {
		return m, fmt.Errorf("%w: %s is a symlink to %s, which is neither a store path in %s nor a readable marker file: %w", ErrUnavailable, source, target, storeDir, err)
	}
	m.Size = int64(len(data))
	return m, m.parse(data, storeDir)
}

// readLinkedFile reads the regular file at p (following links), at most
// nixcache.MaxMarkerSize bytes. It opens without blocking, so a named pipe
// put there meanwhile is refused instead of hanging the reader.
func readLinkedFile(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, not a file", p, kindOf(fi.Mode()))
	}
	return readBounded(f, p)
}

func kindOf(mode os.FileMode) string {
	switch t := mode.Type(); {
	case t&os.ModeDir != 0:
		return "directory (use --roots DIR to read the markers of a directory)"
	case t&os.ModeSymlink != 0:
		return "symlink"
	case t&os.ModeNamedPipe != 0:
		return "named pipe"
	case t&os.ModeSocket != 0:
		return "socket"
	case t&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// readLocalDir reads every marker below a local directory (a --roots
// source): regular files are markers, symlinks are read as under gcroots/,
// dot-names are skipped, anything else is ErrUnavailable. Local markers
// never expire: whoever owns the directory manages it.
func readLocalDir(dir, storeDir string) ([]Marker, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: root directory: %w", ErrUnavailable, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: root directory %s is not a directory", ErrUnavailable, dir)
	}
	var out []Marker
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			var target string
			if info.Mode()&os.ModeSymlink != 0 {
				if target, err = os.Readlink(p); err != nil {
					return err
				}
			}
			m, err := linkMarker(p, p, info.Mode(), target, info.ModTime(), storeDir)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		}
		data, err := readLinkedFile(p)
		if err != nil {
			return err
		}
		m := Marker{Source: p, Local: true, ModTime: info.ModTime(), Size: int64(len(data))}
		if err := m.parse(data, storeDir); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: root directory %s: %w", ErrUnavailable, dir, err)
	}
	return out, nil
}
