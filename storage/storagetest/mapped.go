package storagetest

import (
	"context"
	"io"
	"iter"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/storage"
)

// Mapping adapts the suite to a store that accepts only some key shapes
// (the kiss gateway: those of a binary cache and of kiss itself). The
// suite's tests are unchanged; the store under test sees mapped keys.
type Mapping struct {
	// Key maps a key (or a listing prefix) the suite uses to the key
	// stored. It must keep an invalid key invalid, and map every prefix
	// the suite lists by to the prefix of its keys' images (prepending a
	// namespace does both).
	Key func(string) string
	// Name maps a stored key back to the suite's; ok is false for keys
	// that are not the suite's (the store's own objects).
	Name func(string) (name string, ok bool)
}

// RunMapped runs the conformance suite on the stores open returns, through
// m.
func RunMapped(t *testing.T, open Opener, m Mapping) {
	Run(t, func(t *testing.T) storage.Store { return &mapped{Store: open(t), m: m} })
}

// mapped is the store the suite sees. It has no Unwrap, so no capability
// of the store underneath is found around the mapping (storage.As).
type mapped struct {
	storage.Store
	m Mapping
}

type mappedReader struct {
	storage.Reader
	key string
}

func (r mappedReader) Object() storage.Object {
	o := r.Reader.Object()
	o.Key = r.key
	return o
}

func (s *mapped) Get(ctx context.Context, key string) (storage.Reader, error) {
	r, err := s.Store.Get(ctx, s.m.Key(key))
	if err != nil {
		return nil, err
	}
	return mappedReader{r, key}, nil
}

func (s *mapped) GetRange(ctx context.Context, key string, offset, length int64) (storage.Reader, error) {
	r, err := s.Store.GetRange(ctx, s.m.Key(key), offset, length)
	if err != nil {
		return nil, err
	}
	return mappedReader{r, key}, nil
}

func (s *mapped) Stat(ctx context.Context, key string) (storage.Object, error) {
	o, err := s.Store.Stat(ctx, s.m.Key(key))
	o.Key = key
	return o, err
}

func (s *mapped) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Object, error) {
	o, err := s.Store.Put(ctx, s.m.Key(key), r, opts)
	if err == nil {
		o.Key = key
	}
	return o, err
}

func (s *mapped) Delete(ctx context.Context, key string, opts storage.DeleteOptions) error {
	return s.Store.Delete(ctx, s.m.Key(key), opts)
}

func (s *mapped) DeleteMany(ctx context.Context, keys []string) error {
	ks := make([]string, len(keys))
	for i, k := range keys {
		ks[i] = s.m.Key(k)
	}
	return s.Store.DeleteMany(ctx, ks)
}

// List lists the mapped prefix (the whole store for "", whose keys may be
// mapped anywhere) and names the suite's objects as the suite does.
func (s *mapped) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	inner := ""
	if prefix != "" {
		inner = s.m.Key(prefix)
	}
	return func(yield func(storage.Object, error) bool) {
		for o, err := range s.Store.List(ctx, inner) {
			if err != nil {
				yield(o, err)
				return
			}
			name, ok := s.m.Name(o.Key)
			if !ok || !strings.HasPrefix(name, prefix) {
				continue
			}
			o.Key = name
			if !yield(o, nil) {
				return
			}
		}
	}
}
