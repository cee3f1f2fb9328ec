package storage_test

import (
	"testing"

	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

func TestMemConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return storage.NewMem(nil)
	})
}
