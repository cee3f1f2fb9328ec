// Package gc is the pruner of a Nix binary cache: the root registry (markers
// under gcroots/), the closure walk through References and Deriver, a
// persistent closure memo kept in the cache itself, and plan → execute.
//
// The shape follows the safety argument:
//
//   - Plan reads one listing of the whole store, the roots, and only the
//     narinfos reachable from them (a warm run with a valid memo reads none);
//     it is pure: it deletes nothing and writes nothing.
//   - Plan fails closed (ErrRootsUnavailable, ErrIntegrity, ErrEmptyRoots):
//     anything it cannot read or understand stops deletion altogether.
//   - Execute deletes in batches, narinfo and other metadata before NARs,
//     and calls Fence.Confirm before every batch, so a pruner that lost its
//     lease (lockproto) stops before its next delete.
//   - Nothing younger than the grace period on the store's clock is deleted,
//     and young narinfos count as roots, so an upload in flight survives even
//     if its writer ignores the lock protocol.
//
// Memory is bounded for caches of 10⁸ paths and more: the heap holds 12
// bytes of each narinfo's hash (ids are hash order; a directory over the
// first bytes finds them), a reachability bit, and the NAR key hashes of
// reachable paths; everything else a plan knows (the sorted narinfo table,
// the other objects, the walk's records, the deletions, the next memo)
// lives in unlinked temporary files read a pass at a time (spool.go). The
// memo is read by offset, one record per reachable path, never loaded
// whole unless it is small. NAR keys are compared by 64-bit hashes (a
// collision can only keep an object, never delete one).
package gc
