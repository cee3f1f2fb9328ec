package nixcache

import (
	"bytes"
	"fmt"
)

// ParseNarInfoUpload parses a narinfo a writer offers, holding it to what
// Nix clients need to read it as well as to ParseNarInfo. ParseNarInfo is
// lenient on purpose (the pruner must understand whatever a cache already
// holds: CRLF, a missing NarHash); a narinfo accepted into the cache must
// also be one Nix does not reject as corrupt, or every client substituting
// it fails. Nix reads each line as "Key: value" ending in a newline, and
// needs StorePath, URL, a NarHash that parses and a NarSize above 0.
func ParseNarInfoUpload(data []byte, storeDir string) (*NarInfo, *NarInfoTrust, error) {
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return nil, nil, fmt.Errorf("%w: the last line does not end in a newline (Nix reads it as corrupt)", ErrInvalidNarInfo)
	}
	for n, rest := 1, data; len(rest) > 0; n++ {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		sep := bytes.Index(line, []byte(": "))
		switch {
		case bytes.IndexByte(line, '\r') >= 0:
			return nil, nil, fmt.Errorf("%w: line %d has a carriage return (Nix reads it into the value)", ErrInvalidNarInfo, n)
		case sep <= 0:
			return nil, nil, fmt.Errorf("%w: line %d is not \"Key: value\"", ErrInvalidNarInfo, n)
		}
		// Nix takes the value verbatim from after ": ", where this
		// package's parser trims it: a space around it would make the two
		// read different paths or URLs.
		if v := line[sep+2:]; len(bytes.TrimSpace(v)) != len(v) {
			return nil, nil, fmt.Errorf("%w: line %d has a space around its value", ErrInvalidNarInfo, n)
		}
	}
	ni, t, err := ParseNarInfoTrust(data, storeDir)
	if err != nil {
		return nil, nil, err
	}
	if t.NarHash == "" {
		return nil, nil, fmt.Errorf("%w: no NarHash (Nix reads it as corrupt)", ErrInvalidNarInfo)
	}
	if _, err := ParseContentHash(t.NarHash); err != nil {
		return nil, nil, fmt.Errorf("NarHash: %w", err)
	}
	if t.FileHash != "" {
		if _, err := ParseContentHash(t.FileHash); err != nil {
			return nil, nil, fmt.Errorf("FileHash: %w", err)
		}
	}
	if ni.NarSize == 0 {
		return nil, nil, fmt.Errorf("%w: no NarSize, or 0 (Nix reads it as corrupt)", ErrInvalidNarInfo)
	}
	return ni, t, nil
}
