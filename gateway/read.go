package gateway

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// get answers GET and HEAD of a cache object.
func (s *Server) get(x *exchange, key string) error {
	if !x.access.Read {
		return fail(fasthttp.StatusForbidden, "", "forbidden")
	}
	k, err := classify(key)
	if err != nil {
		if errors.Is(storage.ValidateKey(key), storage.ErrInvalidKey) {
			return fail(fasthttp.StatusBadRequest, "", "%v", err)
		}
		// Files that are not cache objects (temp files, the closure
		// memo, …) do not exist as far as HTTP is concerned.
		return fail(fasthttp.StatusNotFound, "", "not found")
	}
	r := k.Rules()
	if r.Read == nixcache.Writers && !x.access.Write {
		return fail(fasthttp.StatusForbidden, "", "forbidden")
	}
	if k == nixcache.KindCacheInfo {
		x.rc.Response.Header.SetContentType(r.ContentType)
		x.set("Cache-Control", r.CacheControl)
		x.body(s.info)
		return nil
	}
	if s.redirects(x, k) {
		u, err := s.presigner.PresignGet(x.ctx, key, s.cfg.RedirectTTL)
		if err != nil {
			return err
		}
		x.set("Location", u)
		x.set("Cache-Control", "no-store")
		x.status(fasthttp.StatusFound)
		return nil
	}
	// One round trip where possible: Get returns the attributes with the
	// stream. HEAD, and a ranged or conditional read from a remote store,
	// only Stat: the range is then opened alone, and a 304 costs no body
	// (an S3 body closed unread also costs its connection).
	if x.method == fasthttp.MethodHead || (!s.st.Capabilities().Local && hasConditions(&x.rc.Request.Header)) {
		obj, err := s.st.Stat(x.ctx, key)
		if err != nil {
			return s.miss(x, k, key, err)
		}
		return s.send(x, k, key, obj, nil)
	}
	if s.small != nil && cached(k) && !x.hasHeader("Range") {
		obj, err := s.st.Stat(x.ctx, key)
		if err != nil {
			return s.miss(x, k, key, err)
		}
		if b, ok := s.small.get(key, obj.ETag); ok {
			return s.sendCached(x, k, key, obj, b)
		}
	}
	rd, err := s.st.Get(x.ctx, key)
	if err != nil {
		return s.miss(x, k, key, err)
	}
	return s.send(x, k, key, rd.Object(), rd)
}

// sendCached answers a GET from the small-object cache (conditions apply as
// for any read).
func (s *Server) sendCached(x *exchange, k nixcache.Kind, key string, obj storage.Object, b []byte) error {
	if code := precondition(&x.rc.Request.Header, httpstore.ETag(obj.ETag), obj.ModTime); code != 0 {
		return s.send(x, k, key, obj, nil) // answers 304/412 without a body
	}
	s.setObjectHeaders(x, k, obj)
	x.body(b)
	return nil
}

// send answers a read of obj: 304 or 412 by the request's conditions, 416
// or 206 by its Range, or the whole object. rd is the whole object, open
// (nil: open what is needed); send always closes it.
func (s *Server) send(x *exchange, k nixcache.Kind, key string, obj storage.Object, rd storage.Reader) error {
	closeRd := func() {
		if rd != nil {
			rd.Close()
		}
	}
	h := &x.rc.Request.Header
	etag := httpstore.ETag(obj.ETag)
	if code := precondition(h, etag, obj.ModTime); code != 0 {
		closeRd()
		if code == fasthttp.StatusPreconditionFailed {
			return fail(code, "", "precondition failed")
		}
		s.setObjectHeaders(x, k, obj)
		x.rc.Response.Header.Del("Content-Type")
		x.status(code)
		return nil
	}
	br, ranged, unsatisfiable := rangeOf(h, obj.Size, etag, obj.ModTime)
	if unsatisfiable {
		closeRd()
		x.set("Content-Range", "bytes */"+strconv.FormatInt(obj.Size, 10))
		return fail(fasthttp.StatusRequestedRangeNotSatisfiable, "", "range not satisfiable")
	}
	s.setObjectHeaders(x, k, obj)
	off, size := int64(0), obj.Size
	if ranged {
		off, size = br.start, br.length
		x.set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", br.start, br.start+br.length-1, obj.Size))
		x.status(fasthttp.StatusPartialContent)
	}
	if x.method == fasthttp.MethodHead {
		closeRd()
		x.rc.Response.Header.SetContentLength(int(size))
		return nil
	}
	if rd != nil && !ranged && size >= 0 && size <= smallObject {
		// narinfo, .ls, markers: read whole and answer with one write
		// (headers and body in one segment).
		buf := smallBufs.Get().(*[]byte)
		defer smallBufs.Put(buf)
		b := (*buf)[:size]
		_, err := io.ReadFull(rd, b)
		rd.Close()
		if err != nil {
			return err
		}
		if s.small != nil && cached(k) {
			s.small.add(key, obj.ETag, b)
		}
		x.body(b)
		return nil
	}
	var body io.Reader = rd
	if fr, ok := rd.(storage.FileReader); ok && fr.File() != nil {
		// *os.File: the connection copies it with sendfile(2).
		f := fr.File()
		if off > 0 {
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				rd.Close()
				return err
			}
		}
		body = f
	} else if rd == nil || off > 0 {
		closeRd()
		var err error
		if rd, err = s.st.GetRange(x.ctx, key, off, size); err != nil {
			return err
		}
		body = rd
	}
	_ = x.rc.SetWriteDeadline(s.deadline(size))
	x.stream(body, rd, size)
	return nil
}

// redirects reports whether a read is answered with a redirect to the store
// (Config.Redirect): a reader's GET of content. HEAD is answered here (a
// presigned GET does not sign a HEAD), and writers see the store through
// the gateway.
func (s *Server) redirects(x *exchange, k nixcache.Kind) bool {
	if x.method != fasthttp.MethodGet || x.access.Write {
		return false
	}
	switch s.cfg.Redirect {
	case RedirectNARs:
		return k == nixcache.KindNAR
	case RedirectAll:
		return k.Rules().Upstream
	}
	return false
}

// smallObject is the size up to which an object is read whole before it is
// sent (pooled buffers, so no allocation per request).
const smallObject = 64 << 10

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallObject); return &b }}

// miss handles a read of an absent key: the upstream cache if one is
// configured and the key is cache content, 404 otherwise.
func (s *Server) miss(x *exchange, k nixcache.Kind, key string, err error) error {
	if errors.Is(err, storage.ErrNotFound) && s.cfg.Upstream != "" && k.Rules().Upstream && !x.access.Write {
		return s.fromUpstream(x, k, key)
	}
	return err
}
