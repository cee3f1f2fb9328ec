// Package httpstore is the storage driver for http:// and https:// stores:
// a kiss gateway (`kiss serve`, or the loopback endpoint of `kiss
// with-lock`) spoken to over its HTTP API, so the lock protocol, the root
// registry and the pruner's reads run unchanged against a remote cache.
//
// Conditional writes map to If-None-Match: * and If-Match, and fail with
// storage.ErrPreconditionFailed on 412; listings are JSON lines that must
// end with a trailer (a listing cut short is an error, never a short
// result); Now and Capabilities come from the gateway's store
// (GET /?kiss=info). The gateway's refusals keep their reason: RemoteError,
// with sentinels for those storage has no word for (ErrPruneInProgress,
// ErrUnauthorized, ErrForbidden, ErrRejected).
//
// The package also defines the API's wire format (wire.go), which the
// gateway serves. It is configured by explicit Options only: it reads no
// environment and no flags (cmd/kiss reads KISS_CLIENT_CERT, KISS_BEARER, …
// and passes them), and it registers nothing: storage.Open refuses http(s)
// URLs, which callers open with Open.
//
// The gateway accepts only the key shapes of a binary cache and of kiss
// (nixcache.Classify), so the storage conformance suite runs on this driver
// with its keys mapped to such shapes (storagetest.RunMapped).
package httpstore
