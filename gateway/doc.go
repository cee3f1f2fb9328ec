// Package gateway is kiss's HTTP face over any storage.Store: `kiss serve`.
//
// Static serving (nginx on a flat directory, or an S3 bucket) is the fastest
// way to hand out a Nix binary cache, but it cannot validate writes, cannot
// do test-and-set on lock leases, and cannot put authentication in front of
// S3. The gateway does those things over the same storage contract the
// pruner uses, so a cache behaves the same whether it lives on file:// or
// s3://:
//
//   - GET/HEAD of every cache object with Nix's content types, Range,
//     ETag/If-None-Match, immutable caching for NARs (revalidation for narinfos) and
//     no-store for gcroots/; zero-copy (sendfile) when the store hands out an
//     *os.File (storage.FileReader), streaming otherwise.
//   - Writes only from writers (mTLS subject DN, OIDC subject glob, or an
//     open loopback endpoint), only for known key shapes, atomically, with a
//     size limit; a narinfo is refused (409) unless its NAR and every
//     reference's narinfo already exist, which closes the upload/prune race
//     even for writers that skip the lock protocol.
//   - gcroots/ markers and gcroots/.lock/ leases with conditional PUT/DELETE
//     mapped onto the store's conditional writes, a 503 for new writer leases
//     while a fresh prune lease exists, and JSON-lines listings.
//
// The client side, a storage.Store over this HTTP API, is package
// httpstore (which also defines the wire format served here). This package
// provides Ephemeral, the loopback endpoint `kiss with-lock` hands to `nix
// copy` so an old Nix can push anywhere.
package gateway
