package storage

import (
	"bytes"
	"context"
	"iter"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Listing a flat cache is dominated by one stat per file (the pruner needs
// every object's size, mtime and ETag). The walker reads directories with
// getdents(2) in 1 MiB chunks, so a million-entry nar/ is never held at once,
// and fans the names out in batches to a few workers that fstatat(2) them
// relative to the open directory: no path resolution per file, and the stats
// of one huge directory run in parallel. (Measured on ext4: the 2.1 million
// names of a 10⁶-path cache took 1.11–1.14 s to list in 64 KiB chunks and
// 0.75–0.86 s in 1 MiB chunks, nearly all of it inside getdents.)
const (
	listWorkers   = 4
	listBatchSize = 256
	direntBufSize = 1 << 20
)

type listBatch struct {
	objs []Object
	err  error
}

type statJob struct {
	dirfd int
	rel   string
	names []string
	done  *sync.WaitGroup
}

// List walks the tree below the deepest directory the prefix names. Only
// regular files are objects; symlinks and special files are skipped. Order
// is unspecified.
func (s *fileStore) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return listFrom(ctx, prefix, s.walk)
}

// listFrom is the iterator of both listings: produce sends every matching
// object to out in batches and closes it; stopping early cancels it and
// waits for it to finish.
func listFrom(ctx context.Context, prefix string, produce func(ctx context.Context, prefix string, out chan<- listBatch)) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		for b, err := range listBatchesFrom(ctx, prefix, produce) {
			if err != nil {
				yield(Object{}, err)
				return
			}
			for _, o := range b {
				if !yield(o, nil) {
					return
				}
			}
		}
	}
}

// listBatchesFrom is listFrom that yields the batches as produced (each a
// new slice, the caller's to keep).
func listBatchesFrom(ctx context.Context, prefix string, produce func(ctx context.Context, prefix string, out chan<- listBatch)) iter.Seq2[[]Object, error] {
	return func(yield func([]Object, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(nil, wrap("list", prefix, err))
			return
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		out := make(chan listBatch, 2*listWorkers)
		go produce(wctx, prefix, out)
		stop := func() {
			cancel()
			for range out { // let the producer and its workers finish
			}
		}
		for b := range out {
			if b.err != nil {
				stop()
				yield(nil, wrap("list", prefix, b.err))
				return
			}
			if len(b.objs) > 0 && !yield(b.objs, nil) {
				stop()
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(nil, wrap("list", prefix, err))
		}
	}
}

// walk sends every matching object to out in batches and closes out.
func (s *fileStore) walk(ctx context.Context, prefix string, out chan<- listBatch) {
	defer close(out)
	send := func(b listBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	jobs := make(chan statJob)
	var workers sync.WaitGroup
	for range listWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				b := statBatch(j)
				j.done.Done()
				if len(b.objs) > 0 || b.err != nil {
					send(b)
				}
			}
		}()
	}
	defer workers.Wait()
	defer close(jobs)

	stack := []string{startDir(prefix)}
	buf := make([]byte, direntBufSize)
	for len(stack) > 0 {
		if ctx.Err() != nil {
			return
		}
		rel := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		subdirs, err := s.walkDir(ctx, rel, prefix, buf, jobs)
		if err != nil {
			send(listBatch{err: err})
			return
		}
		stack = append(stack, subdirs...)
	}
}

// startDir is the deepest directory whose tree holds every key with prefix.
func startDir(prefix string) string {
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		return prefix[:i]
	}
	return ""
}

// openDir opens the directory rel below the root, never through a symbolic
// link (openNoLinks: a listing shows what Stat and Get reach). A directory
// that vanished, a prefix naming a file's parent that is not a directory, or
// a link on the way, is fd -1 and no error.
func (s *fileStore) openDir(rel string) (string, int, error) {
	dirPath := s.root
	var fd int
	var err error
	if rel == "" {
		err = ignoringEINTR(func() (err error) {
			fd, err = unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			return err
		})
	} else {
		dirPath = s.root + "/" + rel
		fd, err = s.openNoLinks(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	}
	if err != nil {
		if notFoundOr(err) == ErrNotFound {
			return dirPath, -1, nil
		}
		return dirPath, -1, &pathErr{dirPath, err}
	}
	return dirPath, fd, nil
}

// matchesDir reports whether the tree below directory key can hold a key
// with prefix.
func matchesDir(key, prefix string) bool {
	return strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/")
}

// ListKeys names every regular file under prefix from getdents(2) alone,
// with no stat per file (KeyLister): objects carry only their key. A few
// workers read directories in parallel (a flat cache is two huge ones, the
// root and nar/), handing keys over in batches.
func (s *fileStore) ListKeys(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return listFrom(ctx, prefix, s.listKeys)
}

// ListKeyBatches is ListKeys in the batches the workers hand over
// (KeyBatchLister).
func (s *fileStore) ListKeyBatches(ctx context.Context, prefix string) iter.Seq2[[]Object, error] {
	return listBatchesFrom(ctx, prefix, s.listKeys)
}

// listKeys reads the directories below prefix with listWorkers workers,
// sends every matching key to out in batches, and closes out.
func (s *fileStore) listKeys(ctx context.Context, prefix string, out chan<- listBatch) {
	defer close(out)
	var (
		mu     sync.Mutex
		cond   = sync.NewCond(&mu)
		dirs   = []string{startDir(prefix)}
		busy   int
		failed bool
		wg     sync.WaitGroup
	)
	// A subdirectory is handed to an idle worker as soon as it is seen:
	// nar/ is read while the root still is. (Not from the start: a writer
	// that skips the lock puts a NAR before its narinfo, and nar/ read
	// after the root's first chunk sees the NAR of every narinfo in that
	// chunk. A build that read nar/ from the start, beside the root, failed
	// TestTorture: a prune found a reachable narinfo whose NAR it had not
	// listed, and refused.)
	found := func(dir string) {
		mu.Lock()
		dirs = append(dirs, dir)
		cond.Signal()
		mu.Unlock()
	}
	for range listWorkers {
		wg.Go(func() {
			buf := make([]byte, direntBufSize)
			mu.Lock()
			defer mu.Unlock()
			for {
				for len(dirs) == 0 && busy > 0 && !failed {
					cond.Wait()
				}
				if len(dirs) == 0 || failed {
					cond.Broadcast()
					return
				}
				rel := dirs[len(dirs)-1]
				dirs = dirs[:len(dirs)-1]
				busy++
				mu.Unlock()
				err := s.dirKeys(ctx, rel, prefix, buf, out, found)
				if err != nil {
					select {
					case out <- listBatch{err: err}:
					case <-ctx.Done():
					}
				}
				mu.Lock()
				busy--
				failed = failed || err != nil
				cond.Broadcast()
			}
		})
	}
	wg.Wait()
}

// dirKeys sends the keys of the regular files of directory rel to out and
// passes its subdirectories that can hold keys with prefix to found.
func (s *fileStore) dirKeys(ctx context.Context, rel, prefix string, buf []byte, out chan<- listBatch, found func(string)) error {
	dirPath, fd, err := s.openDir(rel)
	if fd < 0 || err != nil {
		return err
	}
	defer unix.Close(fd)
	const batchSize = 1024
	var batch []Object
	send := func() bool {
		select {
		case out <- listBatch{objs: batch}:
			batch = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	var names keyArena
	err = readDir(fd, buf, func(name []byte, typ uint8) bool {
		if typ != unix.DT_DIR && typ != unix.DT_REG {
			return true
		}
		key := names.key(rel, name)
		switch {
		case typ == unix.DT_DIR && matchesDir(key, prefix):
			found(strings.Clone(key))
		case typ == unix.DT_REG && strings.HasPrefix(key, prefix):
			if batch == nil {
				batch = make([]Object, 0, batchSize)
			}
			batch = append(batch, Object{Key: key})
			if len(batch) == batchSize {
				return send()
			}
			return true
		}
		names.drop(key) // not kept: its bytes are reused
		return true
	})
	if err != nil {
		return &pathErr{dirPath, err}
	}
	if len(batch) > 0 {
		send()
	}
	return ctx.Err()
}

// keyArena builds listed keys in shared blocks: one allocation per few
// hundred keys instead of one or two per key (a million-entry directory is
// listed at getdents speed). A block is never written again where a key
// handed out lies, so the strings stay immutable.
type keyArena struct{ block []byte }

const keyArenaBlock = 32 << 10

// key is rel + "/" + name (name alone at the root), valid until drop.
func (a *keyArena) key(rel string, name []byte) string {
	n := len(name)
	if rel != "" {
		n += len(rel) + 1
	}
	if cap(a.block)-len(a.block) < n {
		a.block = make([]byte, 0, max(n, keyArenaBlock))
	}
	start := len(a.block)
	if rel != "" {
		a.block = append(a.block, rel...)
		a.block = append(a.block, '/')
	}
	a.block = append(a.block, name...)
	return unsafe.String(&a.block[start], n)
}

// drop takes back key, the last one made, if it was not handed out.
func (a *keyArena) drop(key string) {
	if n := len(a.block) - len(key); n >= 0 && len(key) > 0 && unsafe.StringData(key) == &a.block[n] {
		a.block = a.block[:n]
	}
}

// walkDir hands the regular files of one directory to the workers, waits
// for them (the directory fd must outlive their fstatat calls) and returns
// the subdirectories that can hold matching keys.
func (s *fileStore) walkDir(ctx context.Context, rel, prefix string, buf []byte, jobs chan<- statJob) ([]string, error) {
	dirPath, fd, err := s.openDir(rel)
	if fd < 0 || err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var (
		pending sync.WaitGroup
		subdirs []string
		batch   []string
	)
	defer pending.Wait()
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		pending.Add(1)
		select {
		case jobs <- statJob{dirfd: fd, rel: rel, names: batch, done: &pending}:
			batch = nil
			return true
		case <-ctx.Done():
			pending.Done()
			return false
		}
	}
	err = readDir(fd, buf, func(raw []byte, typ uint8) bool {
		name := string(raw)
		key := name
		if rel != "" {
			key = rel + "/" + name
		}
		switch typ {
		case unix.DT_DIR:
			if matchesDir(key, prefix) {
				subdirs = append(subdirs, key)
			}
		case unix.DT_REG:
			if strings.HasPrefix(key, prefix) {
				batch = append(batch, name)
				if len(batch) == listBatchSize && !flush() {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return nil, &pathErr{dirPath, err}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !flush() {
		return nil, ctx.Err()
	}
	return subdirs, nil
}

// readDir calls fn with the name and type (DT_DIR, DT_REG, or DT_LNK for
// anything else) of every entry of the open directory fd except . and ..,
// until fn returns false. buf is the getdents(2) buffer.
func readDir(fd int, buf []byte, fn func(name []byte, typ uint8) bool) error {
	for {
		var n int
		err := ignoringEINTR(func() (err error) { n, err = unix.Getdents(fd, buf); return err })
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
			typ := b[18]
			raw := b[19:reclen]
			b = b[reclen:]
			if isDotOrDotDot(raw) {
				continue
			}
			name := cbytes(raw)
			if typ == unix.DT_UNKNOWN { // some filesystems don't fill d_type
				var st unix.Stat_t
				if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					continue
				}
				typ = modeToDT(st.Mode)
			}
			if typ != unix.DT_DIR && typ != unix.DT_REG {
				typ = unix.DT_LNK
			}
			if !fn(name, typ) {
				return nil
			}
		}
	}
}

func isDotOrDotDot(raw []byte) bool {
	return raw[0] == '.' && (raw[1] == 0 || raw[1] == '.' && raw[2] == 0)
}

func statBatch(j statJob) listBatch {
	objs := make([]Object, 0, len(j.names))
	var st unix.Stat_t
	for _, name := range j.names {
		if err := unix.Fstatat(j.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue // deleted while listing
			}
			return listBatch{objs: objs, err: &pathErr{j.rel + "/" + name, err}}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue // replaced by something else while listing
		}
		key := name
		if j.rel != "" {
			key = j.rel + "/" + name
		}
		objs = append(objs, statObject(key, &st))
	}
	return listBatch{objs: objs}
}

// cbytes is b up to its first NUL (a dirent name is NUL-padded).
func cbytes(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func modeToDT(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFREG:
		return unix.DT_REG
	}
	return unix.DT_LNK // anything else is skipped
}

type pathErr struct {
	path string
	err  error
}

func (e *pathErr) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathErr) Unwrap() error { return e.err }
