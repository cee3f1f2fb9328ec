package gateway

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func header(kv ...string) *fasthttp.RequestHeader {
	var h fasthttp.RequestHeader
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &h
}

func TestPrecondition(t *testing.T) {
	mod := time.Date(2026, 11, 25, 2, 0, 0, 500, time.UTC)
	before, at, after := "Tue, 24 Nov 2026 02:00:00 GMT", "Wed, 25 Nov 2026 02:00:00 GMT", "Thu, 26 Nov 2026 02:00:00 GMT"
	const etag = `"abc"`
	for _, c := range []struct {
		name string
		h    []string
		want int
	}{
		{"none", nil, 0},
		{"If-None-Match same", []string{"If-None-Match", etag}, 304},
		{"If-None-Match weak same", []string{"If-None-Match", `W/"abc"`}, 304},
		{"If-None-Match in list", []string{"If-None-Match", `"x", "abc"`}, 304},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match other", []string{"If-None-Match", `"x"`}, 0},
		{"If-None-Match beats If-Modified-Since", []string{"If-None-Match", `"x"`, "If-Modified-Since", after}, 0},
		{"If-Modified-Since at mtime", []string{"If-Modified-Since", at}, 304},
		{"If-Modified-Since later", []string{"If-Modified-Since", after}, 304},
		{"If-Modified-Since earlier", []string{"If-Modified-Since", before}, 0},
		{"If-Modified-Since garbage", []string{"If-Modified-Since", "yesterday"}, 0},
		{"If-Match same", []string{"If-Match", etag}, 0},
		{"If-Match other", []string{"If-Match", `"x"`}, 412},
		{"If-Match weak never matches", []string{"If-Match", `W/"abc"`}, 412},
		{"If-Unmodified-Since earlier", []string{"If-Unmodified-Since", before}, 412},
		{"If-Unmodified-Since at", []string{"If-Unmodified-Since", at}, 0},
	} {
		if got := precondition(header(c.h...), etag, mod); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if got := precondition(header("If-None-Match", `"abc"`), "", mod); got != 0 {
		t.Errorf("no ETag: %d, want 0", got)
	}
}

func TestRangeOf(t *testing.T) {
	mod := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	const etag = `"abc"`
	for _, c := range []struct {
		name          string
		h             []string
		size          int64
		want          byteRange
		ok, unsatisfy bool
	}{
		{"none", nil, 100, byteRange{}, false, false},
		{"first bytes", []string{"Range", "bytes=10-29"}, 100, byteRange{10, 20}, true, false},
		{"open end", []string{"Range", "bytes=90-"}, 100, byteRange{90, 10}, true, false},
		{"end past size", []string{"Range", "bytes=90-500"}, 100, byteRange{90, 10}, true, false},
		{"suffix", []string{"Range", "bytes=-5"}, 100, byteRange{95, 5}, true, false},
		{"suffix longer than object", []string{"Range", "bytes=-500"}, 100, byteRange{0, 100}, true, false},
		{"start past end", []string{"Range", "bytes=100-"}, 100, byteRange{}, false, true},
		{"zero suffix", []string{"Range", "bytes=-0"}, 100, byteRange{}, false, true},
		{"several ranges: whole object", []string{"Range", "bytes=0-1,5-6"}, 100, byteRange{}, false, false},
		{"other unit", []string{"Range", "items=0-1"}, 100, byteRange{}, false, false},
		{"reversed", []string{"Range", "bytes=20-10"}, 100, byteRange{}, false, false},
		{"garbage", []string{"Range", "bytes=a-b"}, 100, byteRange{}, false, false},
		{"If-Range same tag", []string{"Range", "bytes=0-9", "If-Range", etag}, 100, byteRange{0, 10}, true, false},
		{"If-Range other tag", []string{"Range", "bytes=0-9", "If-Range", `"x"`}, 100, byteRange{}, false, false},
		{"If-Range date", []string{"Range", "bytes=0-9", "If-Range", "Wed, 25 Nov 2026 02:00:00 GMT"}, 100, byteRange{0, 10}, true, false},
		{"If-Range other date", []string{"Range", "bytes=0-9", "If-Range", "Thu, 26 Nov 2026 02:00:00 GMT"}, 100, byteRange{}, false, false},
	} {
		got, ok, unsat := rangeOf(header(c.h...), c.size, etag, mod)
		if got != c.want || ok != c.ok || unsat != c.unsatisfy {
			t.Errorf("%s: %+v ok=%v unsatisfiable=%v, want %+v %v %v", c.name, got, ok, unsat, c.want, c.ok, c.unsatisfy)
		}
	}
}
