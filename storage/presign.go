package storage

import (
	"context"
	"time"
)

// Presigner is implemented by stores whose objects can be read straight
// from the backing service with a signed URL (S3). An HTTP front end can
// then answer a read with a redirect instead of passing the bytes through
// itself: the client fetches from the bucket, the front end only decides
// who may.
type Presigner interface {
	// PresignGet returns a URL that lets anyone holding it GET key (with
	// Range and conditional headers) until ttl has passed. It does not
	// check that key exists: a GET of an absent key through it is a 404
	// from the service.
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
}
