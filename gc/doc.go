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
// Memory is kept compact for caches with millions of paths: narinfos are
// 20-byte digests in a sorted slice, reachability is a bitset, NAR keys are
// compared by 64-bit hashes (a collision can only keep an object, never
// delete one), and other keys live in one byte arena.
package gc
