package gateway

import (
	"fmt"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// classify is a request key's kind: storage's guard against traversal and
// odd bytes (a key failing it is a 400), then the cache layout's one
// classification, nixcache.Classify, whose Rules say everything the
// gateway decides by kind (who may read and write it, its content type and
// caching, its size limit, whether it may be deleted or come from the
// upstream). A key of no known shape is an error too: the gateway serves
// and accepts only what the pruner knows.
func classify(key string) (nixcache.Kind, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nixcache.KindOther, err
	}
	k, _ := nixcache.Classify(key)
	if r := k.Rules(); r.Read == nixcache.Nobody && r.Write == nixcache.Nobody {
		return k, fmt.Errorf("%w: %q is not a key a Nix binary cache or kiss uses", storage.ErrInvalidKey, key)
	}
	return k, nil
}
