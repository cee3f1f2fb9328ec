package gateway

import (
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Conditional and range requests on reads (RFC 9110 §13 and §14), the part of
// them a binary cache needs: entity tags and dates for revalidation, one
// byte range for resumed downloads.

// precondition evaluates a GET/HEAD's conditional headers against the
// object's entity tag and modification time, in RFC 9110 §13.2.2's order.
// It returns 0 to serve the object, 304 (Not Modified) or 412 (Precondition
// Failed).
func precondition(h *fasthttp.RequestHeader, etag string, mod time.Time) int {
	if im := h.Peek("If-Match"); im != nil {
		if !etagMatch(string(im), etag, false) {
			return fasthttp.StatusPreconditionFailed
		}
	} else if ius := h.Peek("If-Unmodified-Since"); ius != nil && !mod.IsZero() {
		if t, err := fasthttp.ParseHTTPDate(ius); err == nil && mod.Truncate(time.Second).After(t) {
			return fasthttp.StatusPreconditionFailed
		}
	}
	if inm := h.Peek("If-None-Match"); inm != nil {
		if etagMatch(string(inm), etag, true) {
			return fasthttp.StatusNotModified
		}
	} else if ims := h.Peek("If-Modified-Since"); ims != nil && !mod.IsZero() {
		if t, err := fasthttp.ParseHTTPDate(ims); err == nil && !mod.Truncate(time.Second).After(t) {
			return fasthttp.StatusNotModified
		}
	}
	return 0
}

// hasConditions reports whether a read depends on more than the key: a
// Range or a conditional header.
func hasConditions(h *fasthttp.RequestHeader) bool {
	for _, k := range [...]string{"Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
		if h.Peek(k) != nil {
			return true
		}
	}
	return false
}

// etagMatch reports whether a list of entity tags ("*", or `"a", W/"b"`)
// matches etag: weakly (If-None-Match) ignores the W/ prefix, strongly
// (If-Match, If-Range) never matches a weak tag.
func etagMatch(list, etag string, weak bool) bool {
	if etag == "" {
		return false
	}
	if strings.TrimSpace(list) == "*" {
		return true
	}
	if weak {
		etag = strings.TrimPrefix(etag, "W/")
	} else if strings.HasPrefix(etag, "W/") {
		return false
	}
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if weak {
			t = strings.TrimPrefix(t, "W/")
		}
		if t == etag {
			return true
		}
	}
	return false
}

// byteRange is the part of an object a ranged GET asks for.
type byteRange struct {
	start, length int64
}

// rangeOf returns the single byte range a GET asks for, if it asks for one
// and If-Range (when sent) still names this version. ok is false to send the
// whole object: no Range, a Range of another unit, several ranges (allowed to
// be ignored, RFC 9110 §14.2; Nix never asks for them) or a malformed one.
// unsatisfiable is true when the range lies beyond the object (416).
func rangeOf(h *fasthttp.RequestHeader, size int64, etag string, mod time.Time) (r byteRange, ok, unsatisfiable bool) {
	spec := h.Peek("Range")
	if spec == nil || size < 0 {
		return r, false, false
	}
	if ir := h.Peek("If-Range"); ir != nil {
		v := string(ir)
		if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/"`) {
			if !etagMatch(v, etag, false) {
				return r, false, false
			}
		} else if t, err := fasthttp.ParseHTTPDate(ir); err != nil || mod.IsZero() || !mod.Truncate(time.Second).Equal(t) {
			return r, false, false
		}
	}
	s, found := strings.CutPrefix(strings.TrimSpace(string(spec)), "bytes=")
	if !found || strings.Contains(s, ",") {
		return r, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		return r, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return r, false, false
		}
		if n == 0 || size == 0 {
			return r, false, true
		}
		n = min(n, size)
		return byteRange{start: size - n, length: n}, true, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return r, false, false
	}
	end := size - 1
	if last != "" {
		if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
			return r, false, false
		}
		end = min(end, size-1)
	}
	if start >= size {
		return r, false, true
	}
	return byteRange{start: start, length: end - start + 1}, true, false
}
