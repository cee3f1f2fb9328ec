package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TempPrefix is where the file driver stages objects before publishing them
// with rename(2) or link(2): inside the cache root, so both are on the same
// filesystem and atomic. Keys under it are never cache objects; the pruner
// collects stale ones: nixcache.KissTempPrefix is the same prefix (storage
// and nixcache import nothing of kiss; gc's TestFileDriverTempIsCollectable
// keeps the two equal).
const TempPrefix = ".kiss/tmp/"

// fileStore is the flat directory that `nix copy --to file://` writes and nginx
// serves: key "abc.narinfo" is ROOT/abc.narinfo. It writes no sidecar files.
//
// Why not gocloud's fileblob: its IfNotExist is stat-then-rename (not atomic),
// it has no If-Match, and its List walks the whole tree on every page.
type fileStore struct {
	root string
	// rootFD is the root directory opened O_PATH: Stat and Get resolve keys
	// relative to it (a validated key is a clean relative path), which
	// spares a path walk from / per call.
	rootFD  int
	tmpDir  string
	tmpOnce sync.Once
	tmpErr  error
}

// OpenFile opens the flat directory dir as a Store. A missing directory is
// ErrNoStore, unless opts has CreateDir.
func OpenFile(dir string, opts ...OpenOption) (Store, error) {
	var cfg openConfig
	for _, o := range opts {
		o(&cfg)
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%w: %q is not an absolute path", ErrInvalidURL, dir)
	}
	dir = filepath.Clean(dir)
	if cfg.createDir {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open %s: %w", dir, err)
		}
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (create it first, or check the path)", ErrNoStore, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrInvalidURL, dir)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	s := &fileStore{root: dir, rootFD: fd, tmpDir: filepath.Join(dir, filepath.FromSlash(TempPrefix))}
	// The descriptor lives as long as the store; a store dropped without
	// Close gives it back when it is collected.
	runtime.AddCleanup(s, func(fd int) { unix.Close(fd) }, fd)
	return s, nil
}

func (s *fileStore) URL() string { return "file://" + s.root }

func (s *fileStore) Close() error { return nil }

func (s *fileStore) Capabilities() Capabilities {
	return Capabilities{AtomicCreate: true, CompareAndSwap: true, ConditionalDelete: true, Local: true}
}

// Now is the local clock: the kernel stamps mtimes with it. (On a network
// filesystem the server's clock stamps them; run the pruner on the server.)
func (s *fileStore) Now(context.Context) (time.Time, error) { return time.Now(), nil }

func (s *fileStore) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// fileETag identifies one version of a file: a replace is a rename of a new
// inode, so inode+mtime+size changes whenever the object does.
func fileETag(fi os.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return formatETag(ino, fi.ModTime().UnixNano(), fi.Size())
}

// formatETag is `"<ino>-<mtime ns>-<size>"` in hex, without fmt: List calls
// it once per file. Built on the stack, so the string is the one allocation.
func formatETag(ino uint64, mtimeNs, size int64) string {
	var buf [64]byte
	b := buf[:0]
	b = append(b, '"')
	b = strconv.AppendUint(b, ino, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, mtimeNs, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, size, 16)
	b = append(b, '"')
	return string(b)
}

func fileObject(key string, fi os.FileInfo) Object {
	return Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), ETag: fileETag(fi)}
}

// statObject is fileObject for a raw stat(2) result; both give the same ETag.
func statObject(key string, st *unix.Stat_t) Object {
	mod := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	return Object{Key: key, Size: st.Size, ModTime: mod, ETag: formatETag(st.Ino, mod.UnixNano(), st.Size)}
}

// notFoundOr maps what the kernel says about a key that is not a regular
// file reachable without a symlink to ErrNotFound: absent, a file where a
// directory was expected, a symlink on the way (ELOOP, from
// RESOLVE_NO_SYMLINKS or O_NOFOLLOW) or a way out of the root (EXDEV).
func notFoundOr(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) ||
		errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EXDEV) {
		return ErrNotFound
	}
	return err
}

// noOpenat2 is set once openat2(2) turned out to be missing (Linux < 5.6).
var noOpenat2 atomic.Bool

// openNoLinks opens key below the root without following any symlink, at
// any depth: what List shows is exactly what Get and Stat can reach (a
// symlink inside the cache is absent, wherever it points). openat2 with
// RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH does it in one call; without openat2,
// each directory is opened O_NOFOLLOW in turn.
func (s *fileStore) openNoLinks(key string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	if !strings.Contains(key, "/") {
		// A top-level key (a narinfo) has no directory to resolve, and
		// O_NOFOLLOW refuses a symlink at its name: openat(2) is enough,
		// and cheaper than openat2's resolution (every narinfo read).
		var fd int
		err := ignoringEINTR(func() (err error) { fd, err = unix.Openat(s.rootFD, key, flags, 0); return err })
		return fd, err
	}
	if !noOpenat2.Load() {
		var fd int
		err := ignoringEINTR(func() (err error) {
			fd, err = unix.Openat2(s.rootFD, key, &unix.OpenHow{Flags: uint64(flags),
				Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS})
			return err
		})
		if err != unix.ENOSYS {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	dir := s.rootFD
	for {
		seg, rest, more := strings.Cut(key, "/")
		if !more {
			var fd int
			err := ignoringEINTR(func() (err error) { fd, err = unix.Openat(dir, seg, flags, 0); return err })
			if dir != s.rootFD {
				unix.Close(dir)
			}
			return fd, err
		}
		var next int
		err := ignoringEINTR(func() (err error) {
			next, err = unix.Openat(dir, seg, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			return err
		})
		if dir != s.rootFD {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir, key = next, rest
	}
}

func (s *fileStore) Stat(_ context.Context, key string) (Object, error) {
	d := s.dirs()
	defer d.close()
	return s.statIn(&d, key)
}

// StatMany stats a run of keys with one fstatat(2) each, opening each
// directory once while consecutive keys stay in it (sorted keys: one open
// per directory and run).
func (s *fileStore) StatMany(ctx context.Context, keys []string, each func(i int, o Object, err error) error) error {
	d := s.dirs()
	defer d.close()
	for i, key := range keys {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		o, err := s.statIn(&d, key)
		if err := each(i, o, err); err != nil {
			return err
		}
	}
	return nil
}

// statIn stats key through d: the last component is not followed, and d
// opened its directory without following links, so a symlink anywhere on
// the way makes the key absent, as for Get.
func (s *fileStore) statIn(d *dirCursor, key string) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return Object{}, wrap("stat", key, err)
	}
	var st unix.Stat_t
	fd, base, err := d.at(key)
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) })
	}
	if err != nil {
		return Object{}, wrap("stat", key, notFoundOr(&fs.PathError{Op: "stat", Path: s.root + "/" + key, Err: err}))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Object{}, wrap("stat", key, ErrNotFound)
	}
	return statObject(key, &st), nil
}

// dirCursor resolves validated keys to a directory descriptor and a base
// name. It keeps the directory of the last key open, so a run of keys in
// one directory costs one openat2(2) in all; keys at the top level need
// none (the root's descriptor).
type dirCursor struct {
	s    *fileStore
	name string // the directory fd is open on ("" = the root)
	fd   int
	err  error // opening name failed: every key in it gets this error
}

func (s *fileStore) dirs() dirCursor { return dirCursor{s: s, fd: s.rootFD} }

func (d *dirCursor) at(key string) (fd int, base string, err error) {
	dir, base := "", key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		dir, base = key[:i], key[i+1:]
	}
	if dir != d.name {
		d.close()
		d.name, d.fd, d.err = dir, d.s.rootFD, nil
		if dir != "" {
			if d.fd, d.err = d.s.openNoLinks(dir, unix.O_PATH|unix.O_DIRECTORY); d.err != nil {
				d.fd = -1
			}
		}
	}
	return d.fd, base, d.err
}

func (d *dirCursor) close() {
	if d.fd >= 0 && d.fd != d.s.rootFD {
		unix.Close(d.fd)
	}
	d.fd = -1
	d.name = "\x00" // matches no directory: the next key opens its own
}

// ignoringEINTR retries a syscall that a signal interrupted.
func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// fileReader reads an open file by descriptor; the *os.File that sendfile
// needs is made only when File is called, so a pruner's half a million
// narinfo reads allocate no os.File and register no cleanup.
type fileReader struct {
	fd     int
	f      *os.File // from File(), then the owner of fd
	root   string
	remain int64 // bytes left in the range; -1 = to the end
	obj    Object
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.f != nil {
		return r.f.Read(p)
	}
	if r.remain == 0 {
		return 0, io.EOF
	}
	if r.remain > 0 && int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	var n int
	err := ignoringEINTR(func() (err error) { n, err = unix.Read(r.fd, p); return err })
	if err != nil {
		return 0, &fs.PathError{Op: "read", Path: r.root + "/" + r.obj.Key, Err: err}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	if r.remain > 0 {
		r.remain -= int64(n)
	}
	return n, nil
}

func (r *fileReader) Close() error {
	if r.f != nil {
		return r.f.Close()
	}
	if r.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

func (r *fileReader) Object() Object { return r.obj }

// File hands the descriptor to an *os.File (for sendfile), positioned where
// reading would continue. It is for whole-object readers: a range's length
// is not carried over.
func (r *fileReader) File() *os.File {
	if r.f == nil && r.fd >= 0 {
		// Opened O_NONBLOCK (GetRange): a blocking descriptor, so that
		// os.NewFile does not try to register it with the netpoller.
		if fl, err := unix.FcntlInt(uintptr(r.fd), unix.F_GETFL, 0); err == nil && fl&unix.O_NONBLOCK != 0 {
			_, _ = unix.FcntlInt(uintptr(r.fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
		}
		r.f = os.NewFile(uintptr(r.fd), r.root+"/"+r.obj.Key)
	}
	return r.f
}

func (s *fileStore) Get(ctx context.Context, key string) (Reader, error) {
	return s.GetRange(ctx, key, 0, -1)
}

func (s *fileStore) GetRange(_ context.Context, key string, offset, length int64) (Reader, error) {
	op := "get"
	if offset != 0 || length >= 0 {
		op = "range"
	}
	if err := ValidateKey(key); err != nil {
		return nil, wrap(op, key, err)
	}
	if offset < 0 {
		return nil, wrap(op, key, fmt.Errorf("negative offset %d", offset))
	}
	// openat(2) relative to the root, and os.NewFile rather than os.Open:
	// a regular file gains nothing from the netpoller, whose registration
	// attempt costs syscalls on every narinfo read. O_NONBLOCK: a named
	// pipe at the key would otherwise block the open until some writer
	// opened it (for ever, a prune holding its lease); the fstat below then
	// refuses it. On a regular file O_NONBLOCK changes nothing for read(2);
	// File clears it before os.NewFile, which would poll a non-blocking fd.
	fd, err := s.openNoLinks(key, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, wrap(op, key, notFoundOr(&fs.PathError{Op: "open", Path: s.root + "/" + key, Err: err}))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = ErrNotFound
		}
		return nil, wrap(op, key, err)
	}
	rd := &fileReader{fd: fd, root: s.root, remain: -1, obj: statObject(key, &st)}
	if offset > 0 {
		if _, err := unix.Seek(fd, offset, io.SeekStart); err != nil {
			unix.Close(fd)
			return nil, wrap(op, key, err)
		}
	}
	if length >= 0 {
		rd.remain = length
	}
	return rd, nil
}

// ctxReader stops a streaming copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// stage writes r to a fsynced temp file inside the root and returns it, closed.
func (s *fileStore) stage(ctx context.Context, r io.Reader, sync bool) (string, os.FileInfo, error) {
	s.tmpOnce.Do(func() { s.tmpErr = os.MkdirAll(s.tmpDir, 0o755) })
	if s.tmpErr != nil {
		return "", nil, s.tmpErr
	}
	f, err := os.CreateTemp(s.tmpDir, "put-*")
	if err != nil {
		return "", nil, err
	}
	name := f.Name()
	fail := func(err error) (string, os.FileInfo, error) {
		f.Close()
		os.Remove(name)
		return "", nil, err
	}
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", nil, err
	}
	if err := ctx.Err(); err != nil {
		os.Remove(name)
		return "", nil, err
	}
	return name, fi, nil
}

func (s *fileStore) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	p, err := s.path(key)
	if err != nil {
		return Object{}, wrap("put", key, err)
	}
	if opts.IfNotExist && opts.IfMatch != "" {
		return Object{}, wrap("put", key, fmt.Errorf("IfNotExist and IfMatch are exclusive"))
	}
	tmp, fi, err := s.stage(ctx, r, !opts.Unsynced)
	if err != nil {
		return Object{}, wrap("put", key, err)
	}
	defer os.Remove(tmp) // after link(2), or if publishing failed
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Object{}, wrap("put", key, notFoundOr(err))
	}
	switch {
	case opts.IfNotExist:
		// link(2) fails with EEXIST if the key exists: exactly one winner.
		if err := os.Link(tmp, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return Object{}, wrap("put", key, ErrPreconditionFailed)
			}
			return Object{}, wrap("put", key, err)
		}
		if err := syncDir(dir); err != nil {
			return Object{}, wrap("put", key, err)
		}
	case opts.IfMatch != "":
		err := withDirLock(dir, func() error {
			cur, err := os.Stat(p)
			if err != nil {
				return notFoundOr(err)
			}
			if !cur.Mode().IsRegular() {
				return ErrNotFound
			}
			if fileETag(cur) != opts.IfMatch {
				return ErrPreconditionFailed
			}
			if err := os.Rename(tmp, p); err != nil {
				return err
			}
			return syncDir(dir)
		})
		if err != nil {
			return Object{}, wrap("put", key, err)
		}
	default:
		if err := os.Rename(tmp, p); err != nil {
			return Object{}, wrap("put", key, err)
		}
	}
	return fileObject(key, fi), nil
}

var _ Syncer = (*fileStore)(nil)

// Sync fsyncs key's file (after a Put with Unsynced).
func (s *fileStore) Sync(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return wrap("sync", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return wrap("sync", key, notFoundOr(err))
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return wrap("sync", key, err)
	}
	return nil
}

// withDirLock runs fn under an exclusive flock(2) on dir. Every conditional
// replace or delete of a key in dir takes it, so compare-then-act is atomic
// among kiss processes on this host (and on filesystems with working flock).
func withDirLock(dir string, fn func() error) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return notFoundOr(err)
	}
	defer unix.Close(fd)
	if err := ignoringEINTR(func() error { return unix.Flock(fd, unix.LOCK_EX) }); err != nil {
		return fmt.Errorf("flock %s: %w", dir, err)
	}
	defer func() { _ = unix.Flock(fd, unix.LOCK_UN) }() // closing fd would release it too
	return fn()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *fileStore) Delete(_ context.Context, key string, opts DeleteOptions) error {
	p, err := s.path(key)
	if err != nil {
		return wrap("delete", key, err)
	}
	// Through the key's directory opened without following links, as
	// DeleteMany: a key behind a symlink is absent, and nothing outside the
	// cache is ever unlinked.
	d := s.dirs()
	defer d.close()
	if opts.IfMatch == "" {
		return wrap("delete", key, s.unlinkIn(&d, key))
	}
	return wrap("delete", key, withDirLock(filepath.Dir(p), func() error {
		cur, err := s.statIn(&d, key)
		if err != nil {
			return err
		}
		if cur.ETag != opts.IfMatch {
			return ErrPreconditionFailed
		}
		return s.unlinkIn(&d, key)
	}))
}

// unlinkIn removes key through d; an absent key (or one behind a symlink)
// is already gone.
func (s *fileStore) unlinkIn(d *dirCursor, key string) error {
	fd, base, err := d.at(key)
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Unlinkat(fd, base, 0) })
	}
	switch {
	case err == nil, errors.Is(notFoundOr(err), ErrNotFound):
		return nil
	case err == unix.EISDIR, err == unix.EPERM:
		return fmt.Errorf("%s is a directory: %w", key, ErrInvalidKey)
	}
	return &os.PathError{Op: "unlinkat", Path: s.root + "/" + key, Err: err}
}

// How DeleteMany spreads its unlinks. The first unlinkProbe keys of a call
// are unlinked one after another. If they took more than slowUnlink each,
// the unlinks wait on the disk (the inodes and blocks they free, the
// journal) rather than on the CPU, and the rest go deleteWorkers at a time,
// in runs of unlinkRun consecutive keys (a directory's keys stay together).
// Measured here: 100,000 files of 1 KiB, caches dropped, took 8.1–10.0 s
// one after another and 4.1–4.6 s four at a time. Unlinks that only drop a
// name (a hard-linked copy: about 5 µs) stay serial: in one directory they
// serialise on its lock in the kernel, and workers would only add CPU.
var (
	unlinkProbe = 64
	slowUnlink  = 20 * time.Microsecond
)

const (
	deleteWorkers = 4
	unlinkRun     = 64
)

func (s *fileStore) DeleteMany(ctx context.Context, keys []string) error {
	// One unlinkat(2) each, relative to the key's directory, opened once
	// for a run of keys in it without following links (a symlinked
	// directory is not part of the store, as for List and Get).
	probe := min(len(keys), unlinkProbe)
	t0 := time.Now()
	errs := s.unlinkAll(ctx, keys[:probe], nil)
	if rest := keys[probe:]; len(rest) > 0 {
		if time.Since(t0) > time.Duration(probe)*slowUnlink {
			errs = append(errs, s.unlinkParallel(ctx, rest)...)
		} else {
			errs = s.unlinkAll(ctx, rest, errs)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unlinkAll unlinks keys in order and appends their failures to errs.
func (s *fileStore) unlinkAll(ctx context.Context, keys []string, errs []error) []error {
	d := s.dirs()
	defer d.close()
	for i, k := range keys {
		if i%256 == 0 && ctx.Err() != nil {
			break
		}
		if err := ValidateKey(k); err != nil {
			errs = append(errs, wrap("delete", k, err))
			continue
		}
		if err := s.unlinkIn(&d, k); err != nil {
			errs = append(errs, wrap("delete", k, err))
		}
	}
	return errs
}

// unlinkParallel unlinks keys deleteWorkers at a time, a run of unlinkRun
// consecutive keys each, and returns their failures.
func (s *fileStore) unlinkParallel(ctx context.Context, keys []string) []error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range min(deleteWorkers, (len(keys)+unlinkRun-1)/unlinkRun) {
		wg.Go(func() {
			var mine []error
			for ctx.Err() == nil {
				start := int(next.Add(unlinkRun)) - unlinkRun
				if start >= len(keys) {
					break
				}
				mine = s.unlinkAll(ctx, keys[start:min(start+unlinkRun, len(keys))], mine)
			}
			mu.Lock()
			errs = append(errs, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}
