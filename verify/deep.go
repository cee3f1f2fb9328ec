package verify

import (
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/ulikunitz/xz"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// errUnknownCompression: a narinfo's Compression is none kiss can undo.
var errUnknownCompression = errors.New("unknown compression")

// decompressor returns a reader of the NAR inside r, compressed as the
// narinfo's Compression says (Nix's default, when it says nothing, is bzip2).
func decompressor(compression string, r io.Reader) (io.Reader, func(), error) {
	none := func() {}
	switch compression {
	case "none":
		return r, none, nil
	case "xz":
		x, err := xz.NewReader(r)
		return x, none, err
	case "", "bzip2":
		return bzip2.NewReader(r), none, nil
	case "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, none, err
		}
		return z, z.Close, nil
	case "br":
		return brotli.NewReader(r), none, nil
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, none, err
		}
		return g, func() { g.Close() }, nil
	}
	return nil, none, fmt.Errorf("%w %q", errUnknownCompression, compression)
}

// hasher hashes what is written with the algorithm of want.
func hasher(want *nixhash.HashWithEncoding) hash.Hash { return want.Algo().Func().New() }

// countingWriter counts bytes.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// deep downloads the NAR once: its bytes are hashed for FileHash while they
// are decompressed and hashed for NarHash; then the signatures.
func (c *checker) deep(ctx context.Context, key, narKey string, ni *nixcache.NarInfo, t *nixcache.NarInfoTrust) error {
	if len(c.keys) > 0 {
		fp, err := nixcache.Fingerprint(ni, t, c.storeDir)
		switch {
		case err != nil:
			c.problem(Signature, key, ni.StorePath, "no fingerprint: %v", err)
		case !nixcache.VerifySignature(fp, t.Sigs, c.keys):
			c.problem(Signature, key, ni.StorePath, "no valid signature by a trusted key (%d signatures)", len(t.Sigs))
		}
	}
	narHash, err := nixcache.ParseContentHash(t.NarHash)
	if err != nil {
		c.problem(NarHash, key, ni.StorePath, "%v", err)
		return nil
	}
	var fileHash *nixhash.HashWithEncoding
	if t.FileHash != "" {
		if fileHash, err = nixcache.ParseContentHash(t.FileHash); err != nil {
			c.problem(FileHash, key, ni.StorePath, "%v", err)
		}
	}
	r, err := c.st.Get(ctx, narKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		c.problem(MissingNAR, key, ni.StorePath, "its NAR %s is not in the cache", narKey)
		return nil
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		c.problem(Unreadable, narKey, ni.StorePath, "%v", err)
		return nil
	}
	defer r.Close()
	fileSum := &countingWriter{}
	var fh hash.Hash
	src := io.TeeReader(r, fileSum)
	if fileHash != nil {
		fh = hasher(fileHash)
		src = io.TeeReader(src, fh)
	}
	nar, closeDec, err := decompressor(ni.Compression, src)
	if errors.Is(err, errUnknownCompression) {
		c.problem(Unchecked, key, ni.StorePath, "%v: its NAR was not checked", err)
		return nil
	}
	if err != nil {
		c.problem(NarHash, key, ni.StorePath, "%s cannot be decompressed (%s): %v", narKey, ni.Compression, err)
		return nil
	}
	defer closeDec()
	nh := hasher(narHash)
	narLen := &countingWriter{}
	_, decErr := io.Copy(io.MultiWriter(nh, narLen), nar)
	// Hash what is left of the file (a decompressor may stop before EOF,
	// or fail half way: the file's own hash still says whether it is the
	// file the narinfo names).
	_, err = io.Copy(io.Discard, src)
	c.mu.Lock()
	c.rep.NARs++
	c.rep.BytesRead += fileSum.n
	c.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.problem(Unreadable, narKey, ni.StorePath, "%v", err)
		return nil
	}
	if fh != nil && string(fh.Sum(nil)) != string(fileHash.Digest()) {
		c.problem(FileHash, key, ni.StorePath, "%s does not hash to %s", narKey, t.FileHash)
	}
	if decErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.problem(NarHash, key, ni.StorePath, "%s cannot be decompressed (%s): %v", narKey, ni.Compression, decErr)
		return nil
	}
	switch {
	case string(nh.Sum(nil)) != string(narHash.Digest()):
		c.problem(NarHash, key, ni.StorePath, "the NAR in %s does not hash to %s", narKey, t.NarHash)
	case ni.NarSize > 0 && uint64(narLen.n) != ni.NarSize:
		c.problem(NarHash, key, ni.StorePath, "the NAR in %s is %d bytes, NarSize says %d", narKey, narLen.n, ni.NarSize)
	}
	return nil
}
