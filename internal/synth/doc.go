// Package synth generates synthetic Nix binary caches for prune benchmarks
// and stress tests.
//
// A generated cache has the shape the pruner meets in production, because a
// benchmark on a toy shape would measure the wrong thing: a nixpkgs-like DAG
// of store paths (about ten references per path, a few very popular paths
// referenced by almost everything, bounded depth, self-references), about
// half of it garbage (older versions that still reference live paths),
// deriver (.drv) narinfos, NARs under nar/ (some shared by several
// narinfos, some orphaned), .ls listings, build logs under log/, markers
// under gcroots/, and a few newborn objects younger than any grace period.
//
// Everything is a pure function of Config (including the seed), so two runs
// produce byte-identical caches and the expected outcome of a prune is known
// in advance: Cache.Live, Cache.Reachable and the manifest written by
// WriteManifest say what must survive and what may go.
//
// Reachability follows the original kiss-cache pruner: References and, when
// its narinfo is in the cache, the Deriver. A log/<drv> is live when that drv
// is the deriver of a reachable path. A NAR is live when a reachable narinfo
// names it. Newborn objects (fresh mtime) are unreachable but must survive a
// prune with a grace period.
//
// Bodies of NARs are small fake bytes; FileSize/NarSize carry realistic sizes
// unless Config.ConsistentNARs asks for FileSize and FileHash to describe the
// actual body.
package synth
