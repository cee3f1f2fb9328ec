package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// writeKind checks that the request may write key and returns its kind.
func (s *Server) writeKind(x *exchange, key string) (nixcache.Kind, error) {
	if s.cfg.ReadOnly {
		return nixcache.KindOther, fail(http.StatusForbidden, "read_only", "this gateway is read-only")
	}
	if !x.access.Write {
		return nixcache.KindOther, fail(http.StatusForbidden, "forbidden", "forbidden: %s may not write", x.access.Subject)
	}
	k, err := classify(key)
	if err == nil && k.Rules().Write == nixcache.Nobody {
		err = fmt.Errorf("%w: %q cannot be written", storage.ErrInvalidKey, key)
	}
	if err != nil {
		return nixcache.KindOther, fail(http.StatusBadRequest, "invalid_key", "%v", err)
	}
	return k, nil
}

// conditions maps If-None-Match / If-Match onto storage options.
func (s *Server) conditions(x *exchange, key string) (ifNotExist bool, ifMatch string, err error) {
	inm, im := x.header("If-None-Match"), x.header("If-Match")
	if inm != "" && im != "" {
		return false, "", fail(http.StatusBadRequest, "bad_condition", "send If-None-Match or If-Match, not both")
	}
	if inm != "" {
		if strings.TrimSpace(inm) != "*" {
			return false, "", fail(http.StatusBadRequest, "bad_condition", "only If-None-Match: * is supported on writes")
		}
		return true, "", nil
	}
	if im != "" {
		et, err := s.storageETag(x.ctx, key, im)
		if err != nil {
			return false, "", err // ErrNotFound → 404: the storage contract, so lockproto sees a lost lease
		}
		if et == "" {
			return false, "", storage.ErrPreconditionFailed
		}
		return false, et, nil
	}
	return false, "", nil
}

// limitFor is the largest body accepted for a kind: its own limit for
// the small objects read whole, the configured upload limit otherwise.
func (s *Server) limitFor(k nixcache.Kind) int64 {
	if n := k.Rules().MaxBody; n > 0 {
		return n
	}
	return s.cfg.MaxUploadSize
}

// admitPut checks what the headers of a PUT decide: that the client may
// write key, and that a declared Content-Length is within the limit of the
// key's kind. Before the body is read (also for Expect: 100-continue).
func (s *Server) admitPut(x *exchange, key string) (nixcache.Kind, int64, error) {
	k, err := s.writeKind(x, key)
	if err != nil {
		return k, 0, err
	}
	limit := s.limitFor(k)
	if length := bodyLength(&x.rc.Request.Header); limit > 0 && length > limit {
		return k, limit, fail(http.StatusRequestEntityTooLarge, "too_large", "body of %d bytes exceeds the limit of %d for %s", length, limit, key)
	}
	return k, limit, nil
}

func (s *Server) put(x *exchange, key string) error {
	k, limit, err := s.admitPut(x, key)
	if err != nil {
		return err
	}
	ctx := x.ctx
	length := bodyLength(&x.rc.Request.Header) // -1: chunked
	ifNotExist, ifMatch, err := s.conditions(x, key)
	if err != nil {
		return err
	}
	if k == nixcache.KindLease && key != nixcache.PruneLeaseKey && ifMatch == "" {
		if err := s.refuseDuringPrune(ctx); err != nil {
			return err
		}
	}
	body := x.rc.RequestBodyStream()
	if body == nil {
		body = bytes.NewReader(x.rc.Request.Body())
	}
	if limit > 0 {
		body = &limitedBody{r: body, left: limit}
	}
	_ = x.rc.SetReadDeadline(s.deadline(length))
	if length < 0 {
		// unknown length: a rolling deadline, one more minute for every
		// minute's worth of bytes at MinRate
		body = &rollingDeadline{r: body, set: x.rc.SetReadDeadline, grace: s.cfg.TransferGrace, step: int64(float64(s.cfg.MinRate) * s.cfg.TransferGrace.Seconds())}
	}
	opts := storage.PutOptions{IfNotExist: ifNotExist, IfMatch: ifMatch, ContentType: k.Rules().ContentType}
	// A NAR need not be durable until a narinfo refers to it (a NAR alone
	// is garbage to the pruner, and Nix uploads it again if its narinfo is
	// missing): its sync is deferred to the narinfo's PUT, where it runs
	// beside the narinfo's own, so a path costs one sync wait, not two.
	opts.Unsynced = k == nixcache.KindNAR
	var narKey string // the narinfo's NAR, synced beside the narinfo
	store := s.st.Put

	switch k {
	case nixcache.KindNarInfo, nixcache.KindRoot, nixcache.KindLease, nixcache.KindCacheInfo:
		buf, err := io.ReadAll(body)
		if err != nil {
			return s.bodyError(x, err, limit)
		}
		switch k {
		case nixcache.KindNarInfo:
			narKey, err = s.validateNarinfo(ctx, key, buf)
		case nixcache.KindRoot:
			// The root registry validates and writes markers, for
			// every writer (an invalid one is a 400, see writeError).
			store = func(ctx context.Context, key string, _ io.Reader, opts storage.PutOptions) (storage.Object, error) {
				return roots.Put(ctx, s.st, key, buf, s.cfg.StoreDir, opts)
			}
		case nixcache.KindLease:
			if len(buf) == 0 {
				err = fail(http.StatusBadRequest, "malformed", "empty lease body")
			}
		case nixcache.KindCacheInfo:
			// The pruner and the root registry read the store
			// directory from it: it must stay the one this gateway
			// validates narinfos and markers against.
			if verr := nixcache.ValidateCacheInfo(buf, s.cfg.StoreDir); verr != nil {
				err = fail(http.StatusBadRequest, "malformed", "%v", verr)
			}
		}
		if err != nil {
			return err
		}
		body = bytes.NewReader(buf)
	}
	// A store may read the body from another goroutine and return before
	// it is done (net/http's transport, to S3 or to another gateway, keeps
	// writing a request body after the server has answered): the body is
	// taken back before the handler returns, when fasthttp releases it.
	guard := &guardedBody{r: body}
	defer guard.release(x.rc)
	counted := &countingReader{r: guard}
	var synced chan error
	if narKey != "" {
		synced = make(chan error, 1)
		go func() { synced <- storage.Sync(ctx, s.st, narKey) }()
	}
	obj, err := store(ctx, key, counted, opts)
	if synced != nil {
		if serr := <-synced; serr != nil && err == nil {
			// The narinfo must not stay without a durable NAR.
			if derr := s.st.Delete(ctx, key, storage.DeleteOptions{IfMatch: obj.ETag}); derr != nil {
				s.log.Error("a narinfo whose NAR could not be synced is left in place", "key", key, "nar", narKey, "err", derr)
			}
			return fmt.Errorf("syncing %s: %w", narKey, serr)
		}
	}
	if err != nil {
		if counted.err != nil {
			// the client's body failed (too large, too slow, cut
			// off): its fault, not the store's
			return s.bodyError(x, counted.err, limit)
		}
		return err
	}
	s.m.bytesIn.Add(float64(counted.n))
	if k == nixcache.KindNarInfo {
		s.storeCacheInfo(ctx)
	}
	if obj.ETag != "" {
		x.set("ETag", httpstore.ETag(obj.ETag))
	}
	if !obj.ModTime.IsZero() {
		x.set(httpstore.HeaderMtime, obj.ModTime.UTC().Format(time.RFC3339Nano))
		x.rc.Response.Header.SetLastModified(obj.ModTime.UTC())
	}
	x.set(httpstore.HeaderSize, strconv.FormatInt(obj.Size, 10))
	x.set("Cache-Control", "no-store")
	x.status(http.StatusCreated)
	return nil
}

// storeCacheInfo writes nix-cache-info into the store once it holds a
// narinfo, if it has none. Nix never uploads it through the gateway (the
// gateway answers its GET with its own), yet it is what marks a directory
// as a binary cache (kiss prune refuses one without it). It is what Nix
// itself writes: the store directory, nothing else.
func (s *Server) storeCacheInfo(ctx context.Context) {
	if s.cacheInfoStored.Load() {
		return
	}
	body := "StoreDir: " + s.cfg.StoreDir + "\n"
	_, err := s.st.Put(ctx, nixcache.CacheInfoKey, strings.NewReader(body), storage.PutOptions{IfNotExist: true, ContentType: nixcache.KindCacheInfo.Rules().ContentType})
	switch {
	case errors.Is(err, storage.ErrAccessDenied):
		// The store's owner keeps it (terraform/modules/kiss-cache-s3
		// writes it and denies every kiss role writing it): not ours to
		// write, and not worth a refused request per narinfo.
		s.log.Info("not allowed to store nix-cache-info; leaving it to the store's owner", "err", err)
	case err != nil && !errors.Is(err, storage.ErrPreconditionFailed):
		s.log.Warn("could not store nix-cache-info", "err", err)
		return
	}
	s.cacheInfoStored.Store(true)
}

// errTooLarge is a request body over its limit.
var errTooLarge = errors.New("request body too large")

// limitedBody fails with errTooLarge once a body goes past its limit, so an
// oversized upload without a Content-Length is refused while it streams.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errTooLarge
	}
	return n, err
}

// rollingDeadline extends a deadline by grace each time another step bytes
// have passed, so a long transfer of unknown length must keep up an average
// of step bytes per grace instead of finishing within a fixed time.
type rollingDeadline struct {
	r     io.Reader
	set   func(time.Time) error
	grace time.Duration
	step  int64
	n     int64
	next  int64
}

func (d *rollingDeadline) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.n += int64(n)
	if d.n >= d.next {
		d.next = d.n + d.step
		_ = d.set(time.Now().Add(d.grace))
	}
	return n, err
}

// errBodyReleased is what a store reading a request body gets after its
// handler has ended.
var errBodyReleased = errors.New("request body read after its request ended")

// guardedBody hands a request body to a store and takes it back when the
// handler ends (see put): reads after release fail instead of touching a
// stream fasthttp has released and reused.
type guardedBody struct {
	mu   sync.Mutex
	r    io.Reader
	done bool
}

func (g *guardedBody) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return 0, errBodyReleased
	}
	return g.r.Read(p)
}

// release ends the body's use. A read still waiting for the client is cut
// short (its deadline moved to now), and the connection then closes, since
// what the client sent next is no longer where fasthttp expects it.
func (g *guardedBody) release(rc *fasthttp.RequestCtx) {
	if !g.mu.TryLock() {
		_ = rc.SetReadDeadline(time.Now())
		rc.SetConnectionClose()
		g.mu.Lock()
	}
	g.done = true
	g.mu.Unlock()
}

// countingReader counts the body's bytes and remembers its read error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// bodyError maps a failed request body to its status. The rest of such a
// body is not read: the connection closes after the answer.
func (s *Server) bodyError(x *exchange, err error, limit int64) error {
	x.rc.SetConnectionClose()
	if errors.Is(err, errTooLarge) {
		return fail(http.StatusRequestEntityTooLarge, "too_large", "body exceeds the limit of %d bytes", limit)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fail(http.StatusRequestTimeout, "too_slow", "request body too slow (below the minimum transfer rate)")
	}
	return fail(http.StatusBadRequest, "body", "reading the body: %v", err)
}

// refuseDuringPrune answers 503 while a fresh prune lease exists, so a
// writer backs off instead of starting an upload the pruner would race.
// Freshness is lockproto's, the same a writer taking a lease directly
// applies: the longer of --prune-lease-ttl and the TTL the lease declares,
// at most --max-lock-ttl.
func (s *Server) refuseDuringPrune(ctx context.Context) error {
	h, err := lockproto.Prune(ctx, s.st, lockproto.Judging{TTL: s.cfg.PruneLeaseTTL, MaxTTL: s.cfg.MaxLeaseTTL})
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if h.Stale {
		return nil // its holder is gone (lockproto takes it over)
	}
	e := fail(http.StatusServiceUnavailable, "prune_in_progress", "cache is being pruned, retry later")
	e.retry = min(max(time.Second, lockproto.RefreshInterval(s.cfg.PruneLeaseTTL)), time.Minute)
	return e
}

// validateNarinfo accepts a narinfo only if it parses, describes the store
// path its key names, and everything it needs is already in the store: its
// NAR and the narinfo of every reference (Nix uploads NAR → narinfo, and
// references first). So a narinfo that the pruner could leave dangling, or
// that an upload racing a prune would publish half, is never accepted.
// Parsing and key mapping are nixcache's, the same the pruner uses.
func (s *Server) validateNarinfo(ctx context.Context, key string, buf []byte) (narKey string, err error) {
	if !utf8.Valid(buf) {
		return "", fail(http.StatusBadRequest, "malformed", "narinfo is not UTF-8")
	}
	ni, _, err := nixcache.ParseNarInfoUpload(buf, s.cfg.StoreDir)
	if err != nil {
		return "", fail(http.StatusBadRequest, "malformed", "narinfo does not parse: %v", err)
	}
	if nixcache.NarInfoKey(ni.Hash) != key {
		return "", fail(http.StatusBadRequest, "key_mismatch", "narinfo for %s uploaded as %s", ni.StorePath, key)
	}
	narKey, ok := nixcache.NarKeyFromPlainURL(ni.URL)
	if k, err := classify(narKey); !ok || err != nil || k != nixcache.KindNAR {
		return "", fail(http.StatusBadRequest, "malformed", "narinfo URL %q is not a nar/ key in this cache", ni.URL)
	}
	if len(s.cfg.TrustedKeys) > 0 {
		signed, err := nixcache.VerifyNarInfo(buf, s.cfg.StoreDir, s.cfg.TrustedKeys)
		if err != nil {
			return "", fail(http.StatusBadRequest, "malformed", "narinfo: %v", err)
		}
		if !signed {
			return "", fail(http.StatusForbidden, "unsigned", "narinfo for %s has no valid signature by a trusted key", ni.StorePath)
		}
	}
	// The existence checks run concurrently (bounded): on S3 each is a
	// round trip, and a narinfo has ten references on average.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	check := func(key string, missing func() error) {
		g.Go(func() error {
			if _, err := s.st.Stat(gctx, key); err != nil {
				if errors.Is(err, storage.ErrNotFound) {
					return missing()
				}
				return err
			}
			return nil
		})
	}
	check(narKey, func() error {
		return fail(http.StatusConflict, "missing_nar", "missing %s: upload the NAR before its narinfo", narKey)
	})
	for _, ref := range ni.References {
		if ref == ni.Hash {
			continue // self-reference
		}
		rk := nixcache.NarInfoKey(ref)
		check(rk, func() error {
			return fail(http.StatusConflict, "missing_reference", "missing %s (a reference of %s): upload references first", rk, ni.StorePath)
		})
	}
	return narKey, g.Wait()
}

func (s *Server) delete(x *exchange, key string) error {
	k, err := s.writeKind(x, key)
	if err != nil {
		return err
	}
	if !k.Rules().Delete {
		x.set("Allow", "GET, HEAD, PUT")
		return fail(http.StatusMethodNotAllowed, "delete_refused", "%s cannot be deleted over HTTP (only gcroots/ markers and leases; the pruner removes cache content)", key)
	}
	ctx := x.ctx
	var opts storage.DeleteOptions
	if im := x.header("If-Match"); im != "" {
		et, err := s.storageETag(ctx, key, im)
		if err != nil {
			return err
		}
		if et == "" {
			return storage.ErrPreconditionFailed
		}
		opts.IfMatch = et
	} else if x.hasHeader("If-None-Match") {
		return fail(http.StatusBadRequest, "bad_condition", "If-None-Match makes no sense on DELETE")
	}
	// Never refused for a prune in progress: a writer must always be able
	// to give its lease back.
	if err := s.st.Delete(ctx, key, opts); err != nil {
		return err
	}
	x.set("Cache-Control", "no-store")
	x.status(http.StatusNoContent)
	return nil
}
