// Package storage is the one blob contract every part of kiss runs over.
//
// A Store is a flat key space of immutable-ish objects: the layout `nix copy`
// writes to a file:// cache, served as-is by nginx or an S3 bucket. kiss needs
// more than plain get/put from it, because its lock protocol and its pruner are
// only correct if the store gives these guarantees, which every driver states
// in its Capabilities and which storagetest proves:
//
//   - No partial object is ever visible at its key (puts are atomic).
//   - Create-if-absent has exactly one winner under any concurrency
//     (S3 If-None-Match: *, link(2) of a fsynced temp file on a filesystem).
//   - Replace-if-match and, where declared, delete-if-match compare the
//     object's current ETag atomically.
//   - List and Get read what a completed Put wrote (read-after-write).
//   - ModTime and Now come from the store's clock, never the client's.
//
// Drivers: file:// (and a plain path), s3://, mem://. Open picks one by URL.
// Errors are wrapped with %w around the sentinels in errors.go, so callers
// decide with errors.Is.
package storage
