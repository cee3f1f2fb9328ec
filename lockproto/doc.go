// Package lockproto is kiss's lease protocol over conditional writes: one
// exclusive prune lease and any number of shared writer leases under
// gcroots/.lock/ in the cache itself, so that a prune never races an upload
// (issue 5) on any store that offers create-if-absent and compare-and-swap —
// a flat directory, an S3 bucket, or the gateway's HTTP API — without a
// database or a daemon.
//
// PROTOCOL.md in this directory is the specification; this package
// implements it and its tests are named after its MUST invariants. The
// Promela model in model/ is checked by spin from model_test.go.
//
// A held Lease refreshes itself in the background every TTL/6 by
// compare-and-swap on its ETag. If it cannot refresh for TTL/2 it cancels
// its own Context (the holder must stop working), well before anyone else
// may judge it stale at TTL. Staleness is always judged on the store's clock
// (object ModTime against Store.Now), never on a client's.
//
// Lease I/O goes to the store directly: callers must not route it through a
// concurrency limiter shared with bulk transfers (restic #4199).
package lockproto
