// Package vstore is a virtual binary cache for scale tests and benchmarks: a
// storage.Store that generates a nixpkgs-shaped cache of N store paths on
// the fly, deterministically from a seed, so a prune of 10⁸ paths runs on one
// machine without writing the cache anywhere.
//
// Every object is a pure function of (Config, its index): narinfos (with
// References, Deriver, FileSize, a signature line), NARs (only their sizes:
// a body is zeros), .ls listings, build logs, markers under gcroots/ and
// nix-cache-info. The store keeps only what changes: one bit per deleted
// object and an overlay of objects written through Put (the memo, leases,
// markers). Memory is a few bits per path.
//
// Shape. Outputs are numbered; the first Roots are system paths named by
// markers, the rest of the first Live are live, the others garbage (older
// versions that still reference live paths), the last few of which are
// newborns (uploaded "just now", younger than any grace period, referencing
// only live paths). Every live output hangs in a forest: output c > Roots
// has parent (c-Roots)/Fanout, so the depth is about log_Fanout(Live), and
// each path adds random references, half to a window of nearby paths, half
// skewed towards a few very popular ones (glibc, bash). A share of outputs
// has its .drv uploaded as a narinfo (followed through Deriver), some
// garbage shares its NAR with an older path, some NARs are orphans.
//
// Keys are listed in byte order, as S3 lists them, without sorting anything:
// the first 12 characters of a store path hash encode its rank under a
// seeded permutation (a Feistel network), so rank order is key order, and a
// key is mapped back to its object by inverting the permutation. The other
// characters are pseudo-random, so the hash bytes the pruner indexes by are
// uniform, as real ones are.
//
// The store answers like S3: attributes in listings (size, mtime, ETag),
// pages of 1000 keys (it is a storage.PageLister), DeleteObjects batches of
// 1000, conditional writes. It counts requests by S3 operation and by the
// kind of key, and can sleep a per-request latency.
//
// The generator's own answer (Answer, Check) says what a prune with a grace
// period shorter than Config.Age and longer than ten minutes must keep.
package vstore
