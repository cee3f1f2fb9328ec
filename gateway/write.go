package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/kiss-cache/kiss/storage"
)

// writeKind checks that the request may write key and returns its kind.
func (s *Server) writeKind(r *http.Request, a Access, key string) (kind, error) {
	if s.cfg.ReadOnly {
		return kindInvalid, fail(http.StatusForbidden, "read_only", "this gateway is read-only")
	}
	if !a.Write {
		return kindInvalid, fail(http.StatusForbidden, "forbidden", "forbidden: %s may not write", a.Subject)
	}
	k, err := classify(key)
	if err != nil {
		return kindInvalid, fail(http.StatusBadRequest, "invalid_key", "%v", err)
	}
	return k, nil
}

// conditions maps If-None-Match / If-Match onto storage options.
func (s *Server) conditions(ctx context.Context, r *http.Request, key string) (ifNotExist bool, ifMatch string, err error) {
	inm, im := r.Header.Get("If-None-Match"), r.Header.Get("If-Match")
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
		et, err := s.storageETag(ctx, key, im)
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

func (s *Server) limitFor(k kind) int64 {
	switch k {
	case kindNarinfo:
		return maxNarinfoSize
	case kindMarker:
		return maxMarkerSize
	case kindLease:
		return maxLeaseSize
	case kindCacheInfo:
		return maxInfoSize
	}
	return s.cfg.MaxUploadSize
}

func (s *Server) put(w *recorder, r *http.Request, a Access, key string) error {
	k, err := s.writeKind(r, a, key)
	if err != nil {
		return err
	}
	ctx := r.Context()
	limit := s.limitFor(k)
	if limit > 0 && r.ContentLength > limit {
		return fail(http.StatusRequestEntityTooLarge, "too_large", "body of %d bytes exceeds the limit of %d for %s", r.ContentLength, limit, key)
	}
	ifNotExist, ifMatch, err := s.conditions(ctx, r, key)
	if err != nil {
		return err
	}
	if k == kindLease && key != pruneLeaseKey && ifMatch == "" {
		if err := s.refuseDuringPrune(ctx); err != nil {
			return err
		}
	}
	body := io.Reader(r.Body)
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
	}
	_ = http.NewResponseController(w).SetReadDeadline(s.deadline(r.ContentLength))
	opts := storage.PutOptions{IfNotExist: ifNotExist, IfMatch: ifMatch, ContentType: contentType(k, key)}

	switch k {
	case kindNarinfo, kindMarker, kindLease, kindCacheInfo:
		buf, err := io.ReadAll(body)
		if err != nil {
			return bodyError(err, limit)
		}
		switch k {
		case kindNarinfo:
			err = s.validateNarinfo(ctx, key, buf)
		case kindMarker:
			err = validateMarker(s.cfg.StoreDir, buf)
		case kindLease:
			if len(buf) == 0 {
				err = fail(http.StatusBadRequest, "malformed", "empty lease body")
			}
		}
		if err != nil {
			return err
		}
		body = bytes.NewReader(buf)
	}
	counted := &countingReader{r: body}
	obj, err := s.st.Put(ctx, key, counted, opts)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return bodyError(err, limit)
		}
		return err
	}
	s.m.bytesIn.Add(float64(counted.n))
	h := w.Header()
	if obj.ETag != "" {
		h.Set("ETag", httpETag(obj.ETag))
	}
	if !obj.ModTime.IsZero() {
		h.Set(headerMtime, obj.ModTime.UTC().Format(time.RFC3339Nano))
		h.Set("Last-Modified", obj.ModTime.UTC().Format(http.TimeFormat))
	}
	h.Set(headerSize, strconv.FormatInt(obj.Size, 10))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func bodyError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fail(http.StatusRequestEntityTooLarge, "too_large", "body exceeds the limit of %d bytes", limit)
	}
	return fail(http.StatusBadRequest, "body", "reading the body: %v", err)
}

// refuseDuringPrune answers 503 while a fresh prune lease exists, so a
// writer backs off instead of starting an upload the pruner would race.
func (s *Server) refuseDuringPrune(ctx context.Context) error {
	obj, err := s.st.Stat(ctx, pruneLeaseKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	now, err := s.st.Now(ctx)
	if err != nil {
		return err
	}
	age := now.Sub(obj.ModTime)
	if age >= s.cfg.PruneLeaseTTL {
		return nil // stale: its holder is gone (lockproto takes it over)
	}
	e := fail(http.StatusServiceUnavailable, "prune_in_progress", "cache is being pruned, retry later")
	e.retry = min(max(time.Second, (s.cfg.PruneLeaseTTL-age)/6), time.Minute)
	return e
}

// validateNarinfo accepts a narinfo only if it parses, describes the store
// path its key names, and everything it needs is already in the store: its
// NAR and the narinfo of every reference (Nix uploads NAR → narinfo, and
// references first). So a narinfo that the pruner could leave dangling, or
// that an upload racing a prune would publish half, is never accepted.
func (s *Server) validateNarinfo(ctx context.Context, key string, buf []byte) error {
	if !utf8.Valid(buf) {
		return fail(http.StatusBadRequest, "malformed", "narinfo is not UTF-8")
	}
	ni, err := narinfo.Parse(bytes.NewReader(buf))
	if err != nil {
		return fail(http.StatusBadRequest, "malformed", "narinfo does not parse: %v", err)
	}
	sp, err := storepath.FromAbsolutePath(ni.StorePath)
	if err != nil || !strings.HasPrefix(ni.StorePath, s.cfg.StoreDir+"/") {
		return fail(http.StatusBadRequest, "malformed", "narinfo StorePath %q is not a store path under %s", ni.StorePath, s.cfg.StoreDir)
	}
	hash := strings.TrimSuffix(key, ".narinfo")
	if got := sp.String()[:32]; got != hash {
		return fail(http.StatusBadRequest, "key_mismatch", "narinfo for %s uploaded as %s", ni.StorePath, key)
	}
	if ni.URL == "" {
		return fail(http.StatusBadRequest, "malformed", "narinfo has no URL")
	}
	if k, err := classify(ni.URL); err != nil || k != kindNar {
		return fail(http.StatusBadRequest, "malformed", "narinfo URL %q is not a nar/ key in this cache", ni.URL)
	}
	if len(s.cfg.TrustedKeys) > 0 && !signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, s.cfg.TrustedKeys) {
		return fail(http.StatusForbidden, "unsigned", "narinfo for %s has no valid signature by a trusted key", ni.StorePath)
	}
	if _, err := s.st.Stat(ctx, ni.URL); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fail(http.StatusConflict, "missing_nar", "missing %s: upload the NAR before its narinfo", ni.URL)
		}
		return err
	}
	for _, ref := range ni.References {
		rp, err := storepath.FromString(ref)
		if err != nil {
			return fail(http.StatusBadRequest, "malformed", "narinfo reference %q is not a store path: %v", ref, err)
		}
		rh := rp.String()[:32]
		if rh == hash {
			continue // self-reference
		}
		rk := rh + ".narinfo"
		if _, err := s.st.Stat(ctx, rk); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return fail(http.StatusConflict, "missing_reference", "missing %s (reference %s): upload references first", rk, ref)
			}
			return err
		}
	}
	return nil
}

// validateMarker accepts a GC-root marker: UTF-8, at least one store path,
// one per line; blank lines and "#" comments are allowed, anything else is a
// mistake the pruner would have to ignore, so it is refused here.
func validateMarker(storeDir string, buf []byte) error {
	if !utf8.Valid(buf) {
		return fail(http.StatusBadRequest, "malformed", "marker is not UTF-8")
	}
	paths := 0
	for i, line := range strings.Split(string(buf), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, storeDir+"/")
		if ok {
			base, _, _ := strings.Cut(rest, "/")
			if _, err := storepath.FromString(base); err == nil {
				paths++
				continue
			}
		}
		return fail(http.StatusBadRequest, "malformed", "marker line %d is not a store path under %s: %q", i+1, storeDir, truncate(line, 120))
	}
	if paths == 0 {
		return fail(http.StatusBadRequest, "malformed", "marker names no store path")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Server) delete(w *recorder, r *http.Request, a Access, key string) error {
	k, err := s.writeKind(r, a, key)
	if err != nil {
		return err
	}
	if !mutable(k) {
		w.Header().Set("Allow", "GET, HEAD, PUT")
		return fail(http.StatusMethodNotAllowed, "delete_refused", "%s cannot be deleted over HTTP (only gcroots/ markers and leases; the pruner removes cache content)", key)
	}
	ctx := r.Context()
	var opts storage.DeleteOptions
	if im := r.Header.Get("If-Match"); im != "" {
		et, err := s.storageETag(ctx, key, im)
		if err != nil {
			return err
		}
		if et == "" {
			return storage.ErrPreconditionFailed
		}
		opts.IfMatch = et
	} else if r.Header.Get("If-None-Match") != "" {
		return fail(http.StatusBadRequest, "bad_condition", "If-None-Match makes no sense on DELETE")
	}
	// Never refused for a prune in progress: a writer must always be able
	// to give its lease back.
	if err := s.st.Delete(ctx, key, opts); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

var _ = fmt.Sprintf
