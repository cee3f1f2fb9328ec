package nixcache

import "github.com/nix-community/go-nix/pkg/nixbase32"

// ListSplits are keys that cut a binary cache's key space into ranges of
// similar size, for listing them at the same time (storage.ListParallel):
// narinfos and .ls by the first character of their hash, NARs by the first
// two of their file hash (a 52-character nix-base32 SHA-256 starts with 0 or
// 1), logs and build traces by the first character of a derivation hash,
// realisations and debuginfo by the first hex digit of theirs.
func ListSplits() []string {
	const hex = "0123456789abcdef"
	var s []string
	for _, c := range nixbase32.Alphabet {
		s = append(s, string(c), NarPrefix+"0"+string(c), NarPrefix+"1"+string(c),
			LogPrefix+string(c), BuildTracePrefix+string(c))
	}
	for _, c := range hex {
		s = append(s, RealisationPrefix+"sha256:"+string(c), DebugInfoPrefix+string(c))
	}
	return s
}

// Subtrees are the prefixes below which a binary cache (and kiss) keep
// objects: everything that is not at the top level with the narinfos.
func Subtrees() []string {
	return []string{NarPrefix, LogPrefix, RealisationPrefix, BuildTracePrefix, DebugInfoPrefix, RootsPrefix, KissPrefix, NginxTempPrefix}
}
