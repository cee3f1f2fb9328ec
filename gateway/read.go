package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

func (s *Server) get(w *recorder, r *http.Request, a Access, key string) error {
	if !a.Read {
		return fail(http.StatusForbidden, "", "forbidden")
	}
	k, err := classify(key)
	if err != nil {
		if errors.Is(storage.ValidateKey(key), storage.ErrInvalidKey) {
			return fail(http.StatusBadRequest, "", "%v", err)
		}
		// Files that are not cache objects (temp files, the closure
		// memo, …) do not exist as far as HTTP is concerned.
		return fail(http.StatusNotFound, "", "not found")
	}
	if writersOnly(k) && !a.Write {
		return fail(http.StatusForbidden, "", "forbidden")
	}
	if k == kindCacheInfo {
		w.Header().Set("Content-Type", contentType(k, key))
		w.Header().Set("Cache-Control", "public, max-age=300")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.info))
		return nil
	}
	ctx := r.Context()
	var (
		obj     storage.Object
		content io.ReadSeeker
	)
	// One round trip where possible: Get returns the attributes with the
	// stream. HEAD and ranged reads from a remote store only Stat, and the
	// lazy reader opens exactly the range that is asked for.
	if r.Method == http.MethodHead || (r.Header.Get("Range") != "" && !s.st.Capabilities().Local) {
		obj, err = s.st.Stat(ctx, key)
		if err != nil {
			return s.miss(w, r, a, k, key, err)
		}
		lr := &lazyReader{ctx: ctx, st: s.st, key: key, size: obj.Size}
		defer lr.Close()
		content = lr
	} else {
		rd, err := s.st.Get(ctx, key)
		if err != nil {
			return s.miss(w, r, a, k, key, err)
		}
		obj = rd.Object()
		if obj.Size >= 0 && obj.Size <= smallObject && r.Header.Get("Range") == "" {
			// narinfo, .ls, markers: read whole and answer with one
			// write (headers and body in one segment), which is what
			// keeps a narinfo round trip close to nginx's.
			buf := smallBufs.Get().(*[]byte)
			defer smallBufs.Put(buf)
			b := (*buf)[:obj.Size]
			_, err := io.ReadFull(rd, b)
			rd.Close()
			if err != nil {
				return err
			}
			s.setObjectHeaders(w, k, key, obj)
			if plainGet(r) {
				// no conditions, no range: skip ServeContent's machinery
				h := w.Header()
				if !obj.ModTime.IsZero() {
					h.Set("Last-Modified", obj.ModTime.UTC().Format(http.TimeFormat))
				}
				h.Set("Content-Length", strconv.Itoa(len(b)))
				w.WriteHeader(http.StatusOK)
				w.Write(b)
				return nil
			}
			http.ServeContent(w, r, "", obj.ModTime, bytes.NewReader(b))
			return nil
		}
		if fr, ok := rd.(storage.FileReader); ok && fr.File() != nil {
			// *os.File: net/http copies it with sendfile(2).
			defer rd.Close()
			content = fr.File()
		} else {
			lr := &lazyReader{ctx: ctx, st: s.st, key: key, size: obj.Size, rd: rd}
			defer lr.Close()
			content = lr
		}
	}
	s.setObjectHeaders(w, k, key, obj)
	_ = http.NewResponseController(w).SetWriteDeadline(s.deadline(obj.Size))
	http.ServeContent(w, r, "", obj.ModTime, content)
	return nil
}

// plainGet: a GET with no conditional or range header, which needs no
// more than status, headers and the body.
func plainGet(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	h := r.Header
	for _, k := range [...]string{"Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"} {
		if _, ok := h[k]; ok {
			return false
		}
	}
	return true
}

// smallObject is the size up to which an object is read whole before it is
// sent (pooled buffers, so no allocation per request).
const smallObject = 64 << 10

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallObject); return &b }}

// miss handles a read of an absent key: the upstream cache if one is
// configured and the key is cache content, 404 otherwise.
func (s *Server) miss(w *recorder, r *http.Request, a Access, k kind, key string, err error) error {
	if errors.Is(err, storage.ErrNotFound) && s.cfg.Upstream != "" && upstreamable(k) && !a.Write {
		return s.fromUpstream(w, r, k, key)
	}
	return err
}

// lazyReader is an io.ReadSeeker over a remote object that opens a ranged
// stream only when bytes are read, at the position they are read from, so
// http.ServeContent's seeks (size probe, Range) cost no requests and no
// object is ever buffered whole.
type lazyReader struct {
	ctx   context.Context
	st    storage.Store
	key   string
	size  int64
	pos   int64
	rd    io.ReadCloser // open stream, positioned at rdPos
	rdPos int64
}

func (l *lazyReader) Seek(off int64, whence int) (int64, error) {
	var np int64
	switch whence {
	case io.SeekStart:
		np = off
	case io.SeekCurrent:
		np = l.pos + off
	case io.SeekEnd:
		np = l.size + off
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if np < 0 {
		return 0, fmt.Errorf("seek: negative position %d", np)
	}
	l.pos = np
	return np, nil
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.pos >= l.size {
		return 0, io.EOF
	}
	if l.rd == nil || l.rdPos != l.pos {
		if l.rd != nil {
			l.rd.Close()
			l.rd = nil
		}
		rd, err := l.st.GetRange(l.ctx, l.key, l.pos, -1)
		if err != nil {
			return 0, err
		}
		l.rd, l.rdPos = rd, l.pos
	}
	n, err := l.rd.Read(p)
	l.pos += int64(n)
	l.rdPos += int64(n)
	if err == io.EOF && l.pos < l.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (l *lazyReader) Close() error {
	if l.rd != nil {
		err := l.rd.Close()
		l.rd = nil
		return err
	}
	return nil
}
