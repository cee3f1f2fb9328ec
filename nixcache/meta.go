package nixcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
)

// ErrInvalidMeta: a realisation, build-trace or debuginfo object cannot be
// understood; the pruner keeps it.
var ErrInvalidMeta = errors.New("invalid cache metadata object")

// RealisationOutPath returns the hash of the output path a realisation
// (realisations/<id>.doi: {"outPath": …}) or build-trace entry
// (build-trace-v2/<drv>/<output>.doi: {"outPath": …} or
// {"key": …, "value": {"outPath": …}}) maps to. outPath may be a base name or
// an absolute path.
func RealisationOutPath(data []byte, storeDir string) (Hash, error) {
	var doc struct {
		OutPath string `json:"outPath"`
		Value   *struct {
			OutPath string `json:"outPath"`
		} `json:"value"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return Hash{}, fmt.Errorf("%w: %v", ErrInvalidMeta, err)
	}
	out := doc.OutPath
	if out == "" && doc.Value != nil {
		out = doc.Value.OutPath
	}
	if out == "" {
		return Hash{}, fmt.Errorf("%w: no outPath", ErrInvalidMeta)
	}
	h, err := HashOf(out, storeDir)
	if err != nil || len(out) == HashLen {
		return Hash{}, fmt.Errorf("%w: outPath %q: %v", ErrInvalidMeta, out, err)
	}
	return h, nil
}

// DebugInfoNarKey returns the key of the NAR a debuginfo/<build-id> object
// ({"archive": "../nar/….nar.xz", "member": …}) points into. The archive is
// relative to the debuginfo object's directory.
func DebugInfoNarKey(key string, data []byte) (string, error) {
	var doc struct {
		Archive string `json:"archive"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidMeta, err)
	}
	k, ok := resolve(path.Dir(key), doc.Archive)
	if !ok {
		return "", fmt.Errorf("%w: archive %q is not a key in this cache", ErrInvalidMeta, doc.Archive)
	}
	return k, nil
}
