package storagetest

import "github.com/kiss-cache/kiss/storage"

// WithoutCAS returns st reporting no conditional writes (CompareAndSwap
// false), everything else as st: a store the lock protocol must refuse.
func WithoutCAS(st storage.Store) storage.Store { return noCAS{st} }

type noCAS struct{ storage.Store }

func (s noCAS) Capabilities() storage.Capabilities {
	c := s.Store.Capabilities()
	c.CompareAndSwap = false
	return c
}
