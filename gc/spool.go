package gc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Temporary files. What a prune knows about every listed object (the sorted
// narinfo table, the other objects, the walk's results, the deletions) lives
// in files, not in the heap, so its memory does not grow with the cache
// beyond a few bytes per path; the kernel's page cache holds what fits.
// Each file is unlinked as soon as it is created: it lives as long as its
// descriptor, and nothing is left behind however the process ends.

// tempFiles creates a plan's temporary files in one directory.
type tempFiles struct {
	dir string

	mu    sync.Mutex
	files []*os.File
}

func newTempFiles(dir string) *tempFiles {
	if dir == "" {
		dir = os.TempDir()
	}
	return &tempFiles{dir: dir}
}

// create returns a new, already unlinked, file.
func (t *tempFiles) create(name string) (*os.File, error) {
	f, err := os.CreateTemp(t.dir, "kiss-"+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("gc: temporary file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("gc: temporary file: %w", err)
	}
	t.mu.Lock()
	t.files = append(t.files, f)
	t.mu.Unlock()
	return f, nil
}

// closeAll closes every file created (their space is freed then).
func (t *tempFiles) closeAll() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.files {
		f.Close()
	}
	t.files = nil
}

const spoolBuf = 256 << 10

// spool is an append-only temporary file written through a buffer and read
// back sequentially (any number of times) once it is complete.
type spool struct {
	f       *os.File
	w       *bufio.Writer
	size    int64
	bufSize int // write buffer (default spoolBuf)
}

func newSpool(t *tempFiles, name string) (*spool, error) {
	f, err := t.create(name)
	if err != nil {
		return nil, err
	}
	return &spool{f: f}, nil
}

func (s *spool) write(p []byte) error {
	if s.w == nil {
		n := s.bufSize
		if n == 0 {
			n = spoolBuf
		}
		s.w = bufio.NewWriterSize(s.f, n)
	}
	n, err := s.w.Write(p)
	s.size += int64(n)
	if err != nil {
		return fmt.Errorf("gc: writing a temporary file: %w", err)
	}
	return nil
}

// finish flushes the buffer and frees it.
func (s *spool) finish() error {
	if s.w == nil {
		return nil
	}
	err := s.w.Flush()
	s.w = nil
	if err != nil {
		return fmt.Errorf("gc: writing a temporary file: %w", err)
	}
	return nil
}

// newBuckets creates n spools that records are sorted out into (by a key
// range each): many are written at once, so each has a small buffer.
func newBuckets(t *tempFiles, name string, n int) ([]*spool, error) {
	buckets := make([]*spool, n)
	for i := range buckets {
		b, err := newSpool(t, name)
		if err != nil {
			return nil, err
		}
		b.bufSize = 64 << 10
		buckets[i] = b
	}
	return buckets, nil
}

// readAll reads the finished spool whole into buf, grown as needed.
func (s *spool) readAll(buf []byte) ([]byte, error) {
	data := slices.Grow(buf[:0], int(s.size))[:s.size]
	if _, err := s.f.ReadAt(data, 0); err != nil {
		return data, fmt.Errorf("gc: reading a temporary file: %w", err)
	}
	return data, nil
}

// reader reads the finished spool from the start.
func (s *spool) reader() *bufio.Reader {
	return bufio.NewReaderSize(io.NewSectionReader(s.f, 0, s.size), spoolBuf)
}

// readRecords reads a spool of fixed-size records (size bytes each) into a
// slice of exactly their number, and closes it: one allocation, never
// grown, so no copy of it is ever live beside it.
func readRecords[T any](s *spool, size int, decode func(b []byte) T) ([]T, error) {
	if err := s.finish(); err != nil {
		return nil, err
	}
	defer s.f.Close()
	out := make([]T, s.size/int64(size))
	buf := make([]byte, 4096*size)
	r := io.NewSectionReader(s.f, 0, int64(len(out)*size))
	for i := 0; i < len(out); {
		b := buf[:min(len(buf), (len(out)-i)*size)]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("gc: reading a temporary file: %w", unexpected(err))
		}
		for ; len(b) > 0; b, i = b[size:], i+1 {
			out[i] = decode(b[:size])
		}
	}
	return out, nil
}
