// Package verify is kiss verify, a fsck for a binary cache: every narinfo
// parses and describes the path its key names, its NAR exists with the size
// it states, every reference has a narinfo; deep, every NAR's bytes match
// FileHash, NarHash and NarSize and a trusted key's signature is valid.
// Problems are reported by kind (Report), never fixed silently.
//
// The one repair, --quarantine, is reversible: a narinfo whose NAR is
// missing (clients fail on it with "file does not exist in binary cache")
// is moved to .kiss/quarantine/<hash>.narinfo (nixcache.QuarantineKey)
// under a writer lease, so the path is simply absent and the next push
// uploads it again. The pruner never collects quarantined objects (they are
// kiss's own, under .kiss/) and never counts them as narinfos; Restore puts
// them back where no narinfo has appeared since.
package verify
