package storage_test

import (
	"context"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

func TestS3Conformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		st, err := storage.Open(context.Background(), testenv.Versitygw(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}
