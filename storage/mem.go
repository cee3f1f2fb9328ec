package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sort"
	"strings"
	"sync"
	"time"
)

// memStore keeps objects in process memory. Every operation holds one mutex,
// so conditional operations are trivially atomic. Its clock is injectable, so
// lease and grace-period tests run on fake time.
type memStore struct {
	name  string
	clock func() time.Time

	mu   sync.Mutex
	objs map[string]*memObject
	gen  uint64
}

type memObject struct {
	data []byte
	mod  time.Time
	etag string
}

var (
	memMu     sync.Mutex
	memStores = map[string]*memStore{}
)

// OpenMem returns the process-wide in-memory store called name (mem://name):
// every Open of the same name shares one store, like a bucket.
func OpenMem(name string) Store {
	memMu.Lock()
	defer memMu.Unlock()
	if s, ok := memStores[name]; ok {
		return s
	}
	s := NewMem(nil).(*memStore)
	s.name = name
	memStores[name] = s
	return s
}

// NewMem returns a fresh private in-memory store whose clock (ModTime, Now)
// is clock, or time.Now when nil.
func NewMem(clock func() time.Time) Store {
	if clock == nil {
		clock = time.Now
	}
	return &memStore{clock: clock, objs: map[string]*memObject{}}
}

func (s *memStore) URL() string { return "mem://" + s.name }

func (s *memStore) Close() error { return nil }

func (s *memStore) Capabilities() Capabilities {
	return Capabilities{AtomicCreate: true, CompareAndSwap: true, ConditionalDelete: true}
}

func (s *memStore) Now(context.Context) (time.Time, error) { return s.clock(), nil }

func (s *memStore) object(key string, o *memObject) Object {
	return Object{Key: key, Size: int64(len(o.data)), ModTime: o.mod, ETag: o.etag}
}

func (s *memStore) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return Object{}, wrap("stat", key, err)
	}
	if err := ctx.Err(); err != nil {
		return Object{}, wrap("stat", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[key]
	if !ok {
		return Object{}, wrap("stat", key, ErrNotFound)
	}
	return s.object(key, o), nil
}

type memReader struct {
	*bytes.Reader
	obj Object
}

func (r *memReader) Close() error   { return nil }
func (r *memReader) Object() Object { return r.obj }

func (s *memStore) Get(ctx context.Context, key string) (Reader, error) {
	return s.GetRange(ctx, key, 0, -1)
}

func (s *memStore) GetRange(ctx context.Context, key string, offset, length int64) (Reader, error) {
	op := "get"
	if offset != 0 || length >= 0 {
		op = "range"
	}
	if err := ValidateKey(key); err != nil {
		return nil, wrap(op, key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap(op, key, err)
	}
	if offset < 0 {
		return nil, wrap(op, key, fmt.Errorf("negative offset %d", offset))
	}
	s.mu.Lock()
	o, ok := s.objs[key]
	s.mu.Unlock()
	if !ok {
		return nil, wrap(op, key, ErrNotFound)
	}
	data := o.data // never mutated: a replace stores a new slice
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	data = data[offset:]
	if length >= 0 && length < int64(len(data)) {
		data = data[:length]
	}
	return &memReader{Reader: bytes.NewReader(data), obj: s.object(key, o)}, nil
}

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return Object{}, wrap("put", key, err)
	}
	if opts.IfNotExist && opts.IfMatch != "" {
		return Object{}, wrap("put", key, fmt.Errorf("IfNotExist and IfMatch are exclusive"))
	}
	data, err := io.ReadAll(ctxReader{ctx, r})
	if err != nil {
		return Object{}, wrap("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return Object{}, wrap("put", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.objs[key]
	switch {
	case opts.IfNotExist && exists:
		return Object{}, wrap("put", key, ErrPreconditionFailed)
	case opts.IfMatch != "" && !exists:
		return Object{}, wrap("put", key, ErrNotFound)
	case opts.IfMatch != "" && cur.etag != opts.IfMatch:
		return Object{}, wrap("put", key, ErrPreconditionFailed)
	}
	s.gen++
	o := &memObject{data: data, mod: s.clock(), etag: fmt.Sprintf(`"m%d"`, s.gen)}
	s.objs[key] = o
	return s.object(key, o), nil
}

func (s *memStore) Delete(ctx context.Context, key string, opts DeleteOptions) error {
	if err := ValidateKey(key); err != nil {
		return wrap("delete", key, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap("delete", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if opts.IfMatch != "" {
		cur, ok := s.objs[key]
		if !ok {
			return wrap("delete", key, ErrNotFound)
		}
		if cur.etag != opts.IfMatch {
			return wrap("delete", key, ErrPreconditionFailed)
		}
	}
	delete(s.objs, key)
	return nil
}

func (s *memStore) DeleteMany(ctx context.Context, keys []string) error {
	var errs []error
	for _, k := range keys {
		if err := s.Delete(ctx, k, DeleteOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List snapshots the matching keys (sorted, like S3), then yields their
// current attributes; keys deleted meanwhile are skipped.
func (s *memStore) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(Object{}, wrap("list", prefix, err))
			return
		}
		s.mu.Lock()
		var keys []string
		for k := range s.objs {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
		s.mu.Unlock()
		sort.Strings(keys)
		for _, k := range keys {
			if err := ctx.Err(); err != nil {
				yield(Object{}, wrap("list", prefix, err))
				return
			}
			s.mu.Lock()
			o, ok := s.objs[k]
			s.mu.Unlock()
			if !ok {
				continue
			}
			if !yield(s.object(k, o), nil) {
				return
			}
		}
	}
}

// ListPage lists like S3 ListObjectsV2 with StartAfter (PageLister). It
// scans every key per call: fine for tests, which is what mem:// is for.
func (s *memStore) ListPage(ctx context.Context, prefix, startAfter string, limit int) ([]Object, bool, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, false, wrap("list", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, false, wrap("list", prefix, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.objs {
		if strings.HasPrefix(k, prefix) && k > startAfter {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]Object, len(keys))
	for i, k := range keys {
		out[i] = s.object(k, s.objs[k])
	}
	return out, more, nil
}
