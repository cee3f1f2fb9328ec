package storage_test

import (
	"testing"

	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

func TestFileConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		st, err := storage.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
