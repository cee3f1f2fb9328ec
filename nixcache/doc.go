// Package nixcache is the layout of a Nix binary cache as code: which object
// key holds what, and how to parse the small text objects a pruner must read
// (narinfo, GC-root markers, nix-cache-info, realisations, build traces,
// debuginfo links).
//
// Every mapping from a store path or a narinfo `References:` entry to an
// object key goes through one function, NarInfoKey/HashOf, so a reference can
// never be looked up under the wrong name (the niks3 bug class: references
// kept as bare hashes, compared against keys, deleted live data).
//
// Parsers are tolerant where Nix is (unknown narinfo keys, other lines in a
// marker) and strict where a guess could lose data: a narinfo whose
// StorePath, URL or References cannot be understood is an error, and the
// pruner treats an error as "keep everything".
package nixcache
