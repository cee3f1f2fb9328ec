// Package publish roots store paths in a binary cache under a writer lease:
// the one sequence behind `kiss roots add` (write a marker) and `kiss
// with-lock` (run an upload, then write a marker if it succeeded).
//
// Root checks everything that can be checked before it takes a lease (the
// marker name, the store paths against the cache's StoreDir, a gcroots that
// is not a directory), takes a shared writer lease (lockproto), runs the
// caller's command under the lease's context when there is one, and writes
// the marker with roots.AddKeeping under the same context. The fencing rules
// live here, where the package's tests reach them:
//
//   - no marker if the command failed, could not run, or kiss was
//     interrupted;
//   - no marker if the lease was lost while the command ran, even if the
//     command then succeeded: the pruner may already have judged the lease
//     stale and deleted what the command uploaded;
//   - after a command, the marker is written only under a lease confirmed
//     just now (compare-and-swap, lockproto.Lease.Confirm);
//   - the lease is always released.
//
// Failures come back as errors matching one of the sentinels (ErrInvalid,
// ErrStore, ErrLocked, ErrLeaseLost, ErrInterrupted, ErrCommand) or as a
// *CommandFailedError carrying the command's exit status, so a front end
// maps them to its exit codes without reading messages. The package prints
// nothing and reads no environment: it logs through Options.Logger, and
// running a process (signals, $KISS_STORE, an ephemeral endpoint) is the
// caller's command's business.
package publish
