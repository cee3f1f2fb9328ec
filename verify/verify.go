package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// Kind is a kind of problem.
type Kind string

// Problem kinds. A narinfo has at most one problem of each kind.
const (
	// Unreadable: an object could not be read (an I/O error, not absence).
	Unreadable Kind = "unreadable"
	// InvalidNarInfo: a narinfo cannot be parsed.
	InvalidNarInfo Kind = "invalid-narinfo"
	// WrongKey: a narinfo describes another store path than its key names.
	WrongKey Kind = "wrong-key"
	// MissingNAR: the NAR a narinfo's URL names is not in the cache (Nix
	// clients fail with "file does not exist in binary cache").
	MissingNAR Kind = "missing-nar"
	// NARSize: the NAR's size is not the narinfo's FileSize.
	NARSize Kind = "nar-size"
	// DanglingReference: a reference has no narinfo in the cache.
	DanglingReference Kind = "dangling-reference"
	// FileHash (deep): the NAR's bytes do not hash to FileHash.
	FileHash Kind = "file-hash"
	// NarHash (deep): the decompressed NAR does not hash to NarHash or is
	// not NarSize long, or cannot be decompressed.
	NarHash Kind = "nar-hash"
	// Unchecked (deep): the NAR's compression is unknown to kiss, so its
	// contents could not be checked.
	Unchecked Kind = "unchecked"
	// Signature (deep, with trusted keys): no signature by a trusted key is
	// valid for the narinfo.
	Signature Kind = "signature"
)

// Problem is one thing wrong with one object.
type Problem struct {
	Kind   Kind   `json:"kind"`
	Key    string `json:"key"`
	Path   string `json:"path,omitempty"`
	Detail string `json:"detail"`
}

// Options say how deep to look and what to do about what is found.
type Options struct {
	// Deep downloads every NAR and checks FileHash, NarHash and NarSize,
	// and, with TrustedKeys, the signatures.
	Deep bool
	// TrustedKeys are public keys ("name:base64"); with Deep, a narinfo
	// without a valid signature by one of them is a problem.
	TrustedKeys []string
	// Concurrency of reads; 0 = as the pruner's.
	Concurrency int
	Logger      *slog.Logger
	Progress    gc.Progress
}

// Report is what kiss verify found.
type Report struct {
	Store        string           `json:"store"`
	Now          time.Time        `json:"store_now"`
	Deep         bool             `json:"deep"`
	TrustedKeys  int              `json:"trusted_keys,omitempty"`
	NarInfos     int64            `json:"narinfos"`
	NARs         int64            `json:"nars_checked"`
	BytesRead    int64            `json:"bytes_read"`
	Counts       map[Kind]int     `json:"counts"`
	Problems     []Problem        `json:"problems"`
	Quarantined  []string         `json:"quarantined,omitempty"`
	InQuarantine int              `json:"in_quarantine"`
	Requests     map[string]int64 `json:"requests,omitempty"`
	Elapsed      float64          `json:"elapsed_seconds"`
	Warnings     []string         `json:"warnings,omitempty"`
	Error        string           `json:"error,omitempty"`
}

// OK reports whether nothing was found wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Phases reported to Progress.
const (
	PhaseList  = gc.PhaseList
	PhaseCheck = "verify"
)

// Check reads every narinfo of st and checks it: it parses and names the
// path its key says; its NAR exists with the size it states; each reference
// has a narinfo; with Deep, the NAR's bytes match FileHash, NarHash and
// NarSize and, with TrustedKeys, a trusted signature is valid. It writes
// nothing. The error is for a store it could not list or read at all (or a
// bad trusted key); what is wrong with the cache is in the report.
func Check(ctx context.Context, st storage.Store, o Options) (*Report, error) {
	start := time.Now()
	if o.Progress == nil {
		o.Progress = gc.NoProgress{}
	}
	conc := o.Concurrency
	if conc <= 0 {
		conc = gc.DefaultConcurrency(st)
	}
	var keys []signature.PublicKey
	for _, k := range o.TrustedKeys {
		pk, err := nixcache.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("trusted key %q: %w", k, err)
		}
		keys = append(keys, pk)
	}
	now, err := st.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("store clock: %w", err)
	}
	storeDir, err := roots.StoreDir(ctx, st)
	if err != nil {
		return nil, err
	}
	rep := &Report{Store: st.URL(), Now: now, Deep: o.Deep, TrustedKeys: len(keys), Counts: map[Kind]int{}}

	// One listing: narinfo hashes, NAR keys (with sizes where the listing
	// has them), quarantined narinfos.
	o.Progress.Start(PhaseList, -1, -1)
	narinfos := map[nixcache.Hash]struct{}{}
	nars := map[string]int64{} // size, -1 unknown
	for obj, err := range storage.ListKeys(ctx, st, "") {
		if err != nil {
			o.Progress.Done(PhaseList)
			return nil, fmt.Errorf("listing %s: %w", st.URL(), err)
		}
		o.Progress.Advance(PhaseList, 1, 0)
		if _, ok := nixcache.QuarantinedHash(obj.Key); ok {
			rep.InQuarantine++
			continue
		}
		size := int64(-1)
		if obj.HasAttrs() {
			size = obj.Size
		}
		switch kind, h := nixcache.Classify(obj.Key); kind {
		case nixcache.KindNarInfo:
			narinfos[h] = struct{}{}
		case nixcache.KindNAR:
			nars[obj.Key] = size
		}
	}
	o.Progress.Done(PhaseList)

	c := &checker{st: st, o: o, keys: keys, storeDir: storeDir, narinfos: narinfos, nars: nars, rep: rep}
	hashes := make([]nixcache.Hash, 0, len(narinfos))
	for h := range narinfos {
		hashes = append(hashes, h)
	}
	o.Progress.Start(PhaseCheck, int64(len(hashes)), -1)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(conc)
	for _, h := range hashes {
		eg.Go(func() error {
			defer o.Progress.Advance(PhaseCheck, 1, 0)
			return c.narinfo(ectx, h)
		})
	}
	err = eg.Wait()
	o.Progress.Done(PhaseCheck)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Problems, func(a, b Problem) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

type checker struct {
	st       storage.Store
	o        Options
	keys     []signature.PublicKey
	storeDir string
	narinfos map[nixcache.Hash]struct{}
	nars     map[string]int64

	mu  sync.Mutex
	rep *Report
}

func (c *checker) problem(kind Kind, key, path, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.Problems = append(c.rep.Problems, Problem{Kind: kind, Key: key, Path: path, Detail: fmt.Sprintf(format, args...)})
	c.rep.Counts[kind]++
}

// exists confirms an absence the listing suggested: the object may have
// been written since (an upload in flight lists its narinfo before its NAR
// on a parallel listing).
func (c *checker) exists(ctx context.Context, key string) (storage.Object, bool, error) {
	obj, err := c.st.Stat(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return obj, false, nil
	}
	return obj, err == nil, err
}

// narinfo checks one narinfo and what it names.
func (c *checker) narinfo(ctx context.Context, h nixcache.Hash) error {
	key := nixcache.NarInfoKey(h)
	data, err := readAll(ctx, c.st, key, nixcache.MaxNarInfoSize)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil // deleted since the listing
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		c.problem(Unreadable, key, "", "%v", err)
		return nil
	}
	c.mu.Lock()
	c.rep.NarInfos++
	c.rep.BytesRead += int64(len(data))
	c.mu.Unlock()
	ni, trust, err := nixcache.ParseNarInfoTrust(data, c.storeDir)
	if err != nil {
		c.problem(InvalidNarInfo, key, "", "%v", err)
		return nil
	}
	if ni.Hash != h {
		c.problem(WrongKey, key, ni.StorePath, "describes %s", ni.StorePath)
		return nil
	}
	for i, r := range ni.References {
		if _, ok := c.narinfos[r]; ok {
			continue
		}
		if _, ok, err := c.exists(ctx, nixcache.NarInfoKey(r)); err != nil || !ok {
			c.problem(DanglingReference, key, ni.StorePath, "references %s, which has no narinfo", trust.References[i])
		}
	}
	narKey, ok := ni.NarKey()
	if !ok {
		return nil // the NAR is elsewhere (an absolute URL): nothing here to check
	}
	size, listed := c.nars[narKey]
	if !listed || size < 0 {
		obj, found, err := c.exists(ctx, narKey)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			c.problem(Unreadable, narKey, ni.StorePath, "%v", err)
			return nil
		case !found:
			c.problem(MissingNAR, key, ni.StorePath, "its NAR %s is not in the cache", narKey)
			return nil
		}
		size = obj.Size
	}
	if ni.FileSize > 0 && uint64(size) != ni.FileSize {
		c.problem(NARSize, key, ni.StorePath, "%s is %d bytes, FileSize says %d", narKey, size, ni.FileSize)
	}
	if c.o.Deep {
		return c.deep(ctx, key, narKey, ni, trust)
	}
	return nil
}

// readAll reads at most limit bytes of key.
func readAll(ctx context.Context, st storage.Store, key string, limit int64) ([]byte, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return readAllFrom(r, limit)
}

// readAllFrom reads r to its end (at most limit bytes) and closes it.
func readAllFrom(r storage.Reader, limit int64) ([]byte, error) {
	defer r.Close()
	key := r.Object().Key
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	return data, nil
}
