package httpstore

import (
	"strings"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// The wire format of kiss's HTTP API, shared by the gateway (the server)
// and this driver (the client).

// Response headers of the API, beside the standard ones (ETag,
// Last-Modified, Content-Length, Retry-After).
const (
	HeaderNow   = "X-Kiss-Now"   // the store's clock (RFC 3339, ns)
	HeaderMtime = "X-Kiss-Mtime" // the object's ModTime on the store's clock (RFC 3339, ns)
	HeaderSize  = "X-Kiss-Size"  // the stored object's size, on PUT
	// HeaderError names why a request was refused (a metric reason such as
	// "missing_reference", "prune_in_progress", "conflict"), so the client
	// maps it to the right error without parsing prose.
	HeaderError = "X-Kiss-Error"
)

// Info is the body of GET /?kiss=info: the store's clock and guarantees, so
// a client reports the real Capabilities and Now (invariant I6: time comes
// from the store, not from the client), and what the caller may do.
type Info struct {
	Now          time.Time            `json:"now"`
	Capabilities storage.Capabilities `json:"capabilities"`
	ReadOnly     bool                 `json:"readOnly"`
	Read         bool                 `json:"read"`
	Write        bool                 `json:"write"`
}

// ListEntry is one JSON line of a listing (GET /<prefix>?list=1).
type ListEntry struct {
	Key   string    `json:"key,omitempty"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	ETag  string    `json:"etag,omitempty"`
}

// ListTrailer ends every listing: a client that does not see it knows the
// listing was cut short and must not treat it as complete (fail closed).
type ListTrailer struct {
	End   bool   `json:"end"`
	Count int    `json:"count"`
	Error string `json:"error,omitempty"`
}

// ETag makes a storage ETag a valid HTTP entity tag (quoted).
func ETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) || strings.HasPrefix(e, `W/"`) {
		return e
	}
	return `"` + strings.ReplaceAll(e, `"`, "") + `"`
}
