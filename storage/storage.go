package storage

import (
	"context"
	"io"
	"iter"
	"os"
	"time"
)

// Object describes one stored object. ModTime is on the store's clock.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
	// ETag is opaque: it changes whenever the object is replaced, and is what
	// PutOptions.IfMatch and DeleteOptions.IfMatch compare against.
	ETag string
}

// Capabilities declares what a driver guarantees. The lock protocol refuses
// to run on a store that lacks AtomicCreate or CompareAndSwap.
type Capabilities struct {
	// AtomicCreate: PutOptions.IfNotExist has exactly one winner.
	AtomicCreate bool
	// CompareAndSwap: PutOptions.IfMatch replaces only the named version.
	CompareAndSwap bool
	// ConditionalDelete: DeleteOptions.IfMatch is honoured by the store itself.
	// Without it, Delete with IfMatch is read-compare-delete (a small TOCTOU
	// window, documented in lockproto/PROTOCOL.md).
	ConditionalDelete bool
	// MaxBatchDelete is how many keys one DeleteMany call sends per request
	// (1000 on S3); 0 means the driver deletes one key at a time.
	MaxBatchDelete int
	// DeleteParallel is how many of those requests one DeleteMany call
	// sends at once (0 or 1: one after the other).
	DeleteParallel int
	// Local is true when objects live on this host's filesystem, so reads can
	// be served zero-copy and concurrency should stay low.
	Local bool
}

// PutOptions make a Put conditional. At most one of IfNotExist and IfMatch may be set.
type PutOptions struct {
	// IfNotExist fails with ErrPreconditionFailed if the key exists.
	IfNotExist bool
	// IfMatch fails with ErrPreconditionFailed unless the current ETag equals
	// it, and with ErrNotFound if the key does not exist.
	IfMatch string
	// ContentType is stored where the driver can keep it (S3); file:// derives
	// it from the key when serving.
	ContentType string
	// Unsynced lets Put return before the object is durable (file://: no
	// fsync(2) of its data; it is still published atomically). The caller
	// makes it durable later with Sync, before anything that depends on it
	// is acknowledged. Drivers whose puts are always durable ignore it.
	Unsynced bool
}

// DeleteOptions make a Delete conditional.
type DeleteOptions struct {
	// IfMatch deletes only if the current ETag equals it (ErrPreconditionFailed otherwise).
	IfMatch string
}

// Reader streams one object.
type Reader interface {
	io.ReadCloser
	Object() Object
}

// FileReader is implemented by readers backed by a local file (file://), so
// an HTTP server can hand the *os.File to sendfile(2). The file is positioned
// at the start of the requested range; callers must not close it themselves.
type FileReader interface {
	File() *os.File
}

// Store is the contract. Implementations are safe for concurrent use.
type Store interface {
	// Get opens the whole object for reading. ErrNotFound if absent.
	Get(ctx context.Context, key string) (Reader, error)
	// GetRange opens length bytes from offset (length < 0: to the end).
	GetRange(ctx context.Context, key string, offset, length int64) (Reader, error)
	// Stat returns the object's attributes. ErrNotFound if absent.
	Stat(ctx context.Context, key string) (Object, error)
	// Put stores r at key atomically and returns the new attributes. r is
	// streamed; objects of many GiB are never held in memory (conditional
	// puts are meant for small bodies such as leases and markers).
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error)
	// Delete removes key. Deleting an absent key is not an error unless
	// opts.IfMatch is set (then ErrNotFound).
	Delete(ctx context.Context, key string, opts DeleteOptions) error
	// DeleteMany removes keys, in batches where the store has them. Absent
	// keys are not errors. The returned error joins every per-key failure.
	DeleteMany(ctx context.Context, keys []string) error
	// List streams every object whose key starts with prefix, in no
	// particular order, without holding them all in memory.
	List(ctx context.Context, prefix string) iter.Seq2[Object, error]
	// Now is the store's notion of the current time (for staleness and grace).
	Now(ctx context.Context) (time.Time, error)
	Capabilities() Capabilities
	// URL is the store's location with credentials removed, for messages.
	URL() string
	Close() error
}
