package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// fromUpstream serves a local miss from the upstream cache and keeps a copy.
// Only readers get here (writers must see the store as it is, or Nix would
// skip uploads the narinfo validation then needs).
//
// A NAR (or any object but a narinfo) is streamed to the client while it is
// stored. A narinfo is served at once but stored only after its NAR is in
// the store (fetched in the background), so the store never holds a narinfo
// without its NAR (invariant I2). Copies are unrooted: the pruner removes
// them unless a root reaches them.
func (s *Server) fromUpstream(x *exchange, k nixcache.Kind, key string) error {
	method := http.MethodGet
	if x.method == http.MethodHead {
		method = http.MethodHead // Nix asks with HEAD whether a narinfo exists
	}
	resp, err := s.upstreamDo(x.ctx, method, key)
	if err != nil {
		s.m.upstream.WithLabelValues("error").Inc()
		s.log.Warn("upstream fetch failed", "key", key, "err", err)
		return fail(http.StatusBadGateway, "", "upstream fetch failed")
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		s.m.upstream.WithLabelValues("miss").Inc()
		return fail(http.StatusNotFound, "", "not found")
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		s.m.upstream.WithLabelValues("error").Inc()
		return fail(http.StatusBadGateway, "", "upstream answered %s", resp.Status)
	}
	s.m.upstream.WithLabelValues("hit").Inc()
	r := k.Rules()
	x.rc.Response.Header.SetContentType(r.ContentType)
	x.set("Cache-Control", r.CacheControl)
	x.set("X-Content-Type-Options", "nosniff")
	if method == http.MethodHead {
		resp.Body.Close()
		if resp.ContentLength >= 0 {
			x.rc.Response.Header.SetContentLength(int(resp.ContentLength))
		}
		return nil
	}
	if k == nixcache.KindNarInfo {
		buf, err := io.ReadAll(io.LimitReader(resp.Body, r.MaxBody+1))
		resp.Body.Close()
		if err != nil || int64(len(buf)) > r.MaxBody {
			return fail(http.StatusBadGateway, "", "upstream narinfo unreadable or too large")
		}
		x.body(buf)
		s.mirrorNarinfo(key, buf)
		return nil
	}
	_ = x.rc.SetWriteDeadline(s.deadline(resp.ContentLength))
	// Tee into the store. A client that goes away does not stop the copy
	// (the next reader wants it too); an upstream that breaks makes the
	// Put fail, so no partial object ever appears at key.
	t := s.tee(x.ctx, k, key, &exactReader{r: resp.Body, want: resp.ContentLength}, resp.Body)
	toClient := io.Reader(t)
	if resp.ContentLength < 0 {
		toClient = &rollingDeadline{r: t, set: x.rc.SetWriteDeadline, grace: s.cfg.TransferGrace, step: int64(float64(s.cfg.MinRate) * s.cfg.TransferGrace.Seconds())}
	}
	x.stream(toClient, t, resp.ContentLength)
	return nil
}

// teeBody is an upstream object on its way to the client and, through a
// pipe, into the store.
type teeBody struct {
	s       *Server
	key     string
	src     io.Reader
	body    io.Closer // the upstream response body
	pw      *io.PipeWriter
	stored  chan error // the Put's result
	srcDone bool       // src reached its end (or failed)
	srcErr  error
}

func (s *Server) tee(ctx context.Context, k nixcache.Kind, key string, src io.Reader, body io.Closer) *teeBody {
	pr, pw := io.Pipe()
	t := &teeBody{s: s, key: key, src: src, body: body, pw: pw, stored: make(chan error, 1)}
	go func() {
		_, err := s.st.Put(context.WithoutCancel(ctx), key, pr, storage.PutOptions{ContentType: k.Rules().ContentType})
		pr.CloseWithError(err)
		t.stored <- err
	}()
	return t
}

// Read passes upstream bytes to the store, then to the client.
func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if n > 0 {
		if _, werr := t.pw.Write(p[:n]); werr != nil {
			// the store gave up (its error comes with the Put); the
			// client still gets the bytes
			t.pw.CloseWithError(werr)
		}
	}
	if err != nil {
		t.srcDone, t.srcErr = true, err
	}
	return n, err
}

// Close finishes the store copy: if the client left early, the rest of the
// object is still copied into the store, in the background.
func (t *teeBody) Close() error {
	finish := func() {
		if !t.srcDone {
			_, t.srcErr = io.Copy(t.pw, t.src)
		}
		if errors.Is(t.srcErr, io.EOF) {
			t.srcErr = nil
		}
		t.pw.CloseWithError(t.srcErr)
		t.body.Close()
		if err := <-t.stored; err != nil && t.srcErr == nil {
			t.s.log.Warn("storing upstream object failed", "key", t.key, "err", err)
		}
	}
	if t.srcDone {
		finish()
	} else {
		go finish()
	}
	return nil
}

// exactReader fails with ErrUnexpectedEOF when a body ends before its
// Content-Length, so a truncated upstream transfer is never stored.
type exactReader struct {
	r    io.Reader
	want int64 // -1: unknown
	n    int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	if err == io.EOF && e.want >= 0 && e.n != e.want {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (s *Server) upstreamGet(ctx context.Context, key string) (*http.Response, error) {
	return s.upstreamDo(ctx, http.MethodGet, key)
}

func (s *Server) upstreamDo(ctx context.Context, method, key string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.cfg.Upstream+"/"+key, nil)
	if err != nil {
		return nil, err
	}
	return s.upc.Do(req)
}

// mirrorNarinfo stores an upstream narinfo after its NAR, in the background
// (bounded: at most one copy per key at a time, 30 minutes each).
func (s *Server) mirrorNarinfo(key string, buf []byte) {
	s.mirrorMu.Lock()
	if s.mirrorInFlight == nil {
		s.mirrorInFlight = map[string]bool{}
	}
	if s.mirrorInFlight[key] || len(s.mirrorInFlight) >= 64 {
		s.mirrorMu.Unlock()
		return
	}
	s.mirrorInFlight[key] = true
	s.mirrorMu.Unlock()
	go func() {
		defer func() {
			s.mirrorMu.Lock()
			delete(s.mirrorInFlight, key)
			s.mirrorMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if err := s.mirror(ctx, key, buf); lockproto.IsLocked(err) {
			s.log.Info("upstream narinfo not mirrored: the cache is being pruned", "key", key, "err", err)
		} else if err != nil {
			s.log.Warn("mirroring upstream narinfo failed", "key", key, "err", err)
		}
	}()
}

func (s *Server) mirror(ctx context.Context, key string, buf []byte) error {
	ni, err := nixcache.ParseNarInfo(buf, s.cfg.StoreDir)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if nixcache.NarInfoKey(ni.Hash) != key {
		return fmt.Errorf("upstream narinfo for %s served as %s", ni.StorePath, key)
	}
	narKey, ok := nixcache.NarKeyFromPlainURL(ni.URL)
	if k, err := classify(narKey); !ok || err != nil || k != nixcache.KindNAR {
		return fmt.Errorf("narinfo URL %q is not a nar/ key", ni.URL)
	}
	if _, err := s.st.Stat(ctx, narKey); errors.Is(err, storage.ErrNotFound) {
		resp, err := s.upstreamGet(ctx, narKey)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("upstream %s: %s", narKey, resp.Status)
		}
		if _, err := s.st.Put(ctx, narKey, &exactReader{r: resp.Body, want: resp.ContentLength}, storage.PutOptions{ContentType: nixcache.KindNAR.Rules().ContentType}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	// The narinfo is a write a prune must either see or exclude (I5): a
	// NAR found above may be garbage a running prune is about to delete
	// (it deletes narinfos, then NARs), and a narinfo stored in between
	// would outlive it (I2). So it is stored under a writer lease, as any
	// writer's, and only after the NAR is seen again under it.
	release, err := s.mirrorLease(ctx)
	if err != nil {
		return err
	}
	defer release()
	if _, err := s.st.Stat(ctx, narKey); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%s was deleted (by a prune) before its narinfo could be stored; the next miss fetches both", narKey)
		}
		return err
	}
	_, err = s.st.Put(ctx, key, bytes.NewReader(buf), storage.PutOptions{IfNotExist: true, ContentType: nixcache.KindNarInfo.Rules().ContentType})
	if errors.Is(err, storage.ErrPreconditionFailed) {
		return nil
	}
	return err
}

// mirrorLease takes a writer lease for storing a mirrored narinfo: one
// attempt, refused while a fresh prune lease exists (judged as for writer
// leases through the gateway). On a store without conditional writes no
// prune can hold a lease either, and the narinfo is stored without one.
func (s *Server) mirrorLease(ctx context.Context) (release func(), err error) {
	l, err := lockproto.AcquireWriter(ctx, s.st, "kiss-serve-upstream", lockproto.Options{
		TTL:     s.cfg.PruneLeaseTTL,
		MaxTTL:  s.cfg.MaxLeaseTTL,
		Owner:   "kiss serve --upstream (mirroring a narinfo)",
		Command: "kiss serve",
		Logger:  s.log,
	})
	switch {
	case errors.Is(err, lockproto.ErrUnsupportedStore):
		return func() {}, nil
	case lockproto.IsLocked(err):
		return nil, fmt.Errorf("not stored while the cache is being pruned (the next miss stores it): %w", err)
	case err != nil:
		return nil, fmt.Errorf("taking a writer lease: %w", err)
	}
	return func() {
		if err := l.Release(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn("releasing the upstream mirror's writer lease", "lease", l.Key(), "err", err)
		}
	}, nil
}
