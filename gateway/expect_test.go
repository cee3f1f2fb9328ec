package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/nixcache"
)

// expectHeaders sends the headers of a PUT with "Expect: 100-continue" and
// the given Content-Length (no body yet), and returns the connection, its
// reader and the gateway's first answer.
func expectHeaders(t *testing.T, base, path string, length int, hdr ...string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: cache\r\nContent-Length: %d\r\nExpect: 100-continue\r\n", path, length)
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	return c, br, resp
}

// expectPut sends a PUT with "Expect: 100-continue" and the given
// Content-Length, and returns the first status line the gateway answers
// before any body is sent, then (if it was 100 Continue) sends the body and
// returns the final status too.
func expectPut(t *testing.T, base, path string, length int, hdr ...string) (first, final int) {
	t.Helper()
	c, br, resp := expectHeaders(t, base, path, length, hdr...)
	resp.Body.Close()
	if resp.StatusCode != http.StatusContinue {
		return resp.StatusCode, resp.StatusCode
	}
	if _, err := c.Write([]byte(strings.Repeat("x", length))); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no final answer: %v", err)
	}
	resp.Body.Close()
	return http.StatusContinue, resp.StatusCode
}

// Issue 11 item 11: a PUT with "Expect: 100-continue" whose Content-Length
// is over --max-upload-size (or over the fixed limit of its kind, or that
// may not write at all) is refused before the body: no 100 Continue.
func TestExpectContinueRefusedBeforeBody(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, MaxUploadSize: 1 << 20})
	nar := "/" + newPath("big").narKey()
	if first, _ := expectPut(t, e.srv.URL, nar, 2<<20); first != http.StatusRequestEntityTooLarge {
		t.Fatalf("NAR over --max-upload-size: first answer %d, want 413 before the body", first)
	}
	if e.has(strings.TrimPrefix(nar, "/")) {
		t.Fatal("the refused NAR was stored")
	}
	// A narinfo over its own limit (nixcache.MaxNarInfoSize), whatever
	// --max-upload-size says.
	info := "/" + newPath("big").narinfoKey()
	if first, _ := expectPut(t, e.srv.URL, info, nixcache.MaxNarInfoSize+1); first != http.StatusRequestEntityTooLarge {
		t.Fatalf("narinfo over its limit: first answer %d, want 413", first)
	}
	// Within the limit: 100 Continue, then the upload lands.
	small := "/" + newPath("small").narKey()
	if first, final := expectPut(t, e.srv.URL, small, 1000); first != http.StatusContinue || final != http.StatusCreated {
		t.Fatalf("NAR within the limit: %d then %d, want 100 then 201", first, final)
	}

	// A client that may not write hears so before sending its body.
	ro := newEnv(t, nil, gateway.Config{Auth: gateway.OpenReads{}})
	if first, _ := expectPut(t, ro.srv.URL, nar, 1000); first != http.StatusForbidden {
		t.Fatalf("PUT by a reader: first answer %d, want 403 before the body", first)
	}
}

// expectRefusal sends a PUT with "Expect: 100-continue" and returns the
// gateway's first answer, which must be a final one (a refusal).
func expectRefusal(t *testing.T, base, path string, length int, hdr ...string) *http.Response {
	t.Helper()
	_, _, resp := expectHeaders(t, base, path, length, hdr...)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if resp.StatusCode == http.StatusContinue {
		t.Fatalf("PUT %s: 100 Continue, want a refusal", path)
	}
	return resp
}

// A refusal before the body says why, as every other refusal does: the
// X-Kiss-Error reason and a message (Nix prints the body of a failed
// upload). It used to be a bare status line with an empty body.
func TestExpectContinueRefusalSaysWhy(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, MaxUploadSize: 1 << 20})
	ro := newEnv(t, nil, gateway.Config{Auth: gateway.OpenReads{}})
	for _, c := range []struct {
		name, base, path string
		length           int
		status           int
		reason, msg      string
	}{
		{"over --max-upload-size", e.srv.URL, "/" + newPath("big").narKey(), 2 << 20, http.StatusRequestEntityTooLarge, "too_large", "exceeds the limit"},
		{"not a cache key", e.srv.URL, "/nar/..%2fx.nar", 10, http.StatusBadRequest, "invalid_key", "invalid key"},
		{"a reader", ro.srv.URL, "/" + newPath("small").narKey(), 10, http.StatusForbidden, "forbidden", "may not write"},
	} {
		resp := expectRefusal(t, c.base, c.path, c.length)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.status || resp.Header.Get(httpstore.HeaderError) != c.reason || !strings.Contains(string(body), c.msg) {
			t.Errorf("%s: %d, %s %q, body %q; want %d, %s %q and a body saying %q",
				c.name, resp.StatusCode, httpstore.HeaderError, resp.Header.Get(httpstore.HeaderError), body, c.status, httpstore.HeaderError, c.reason, c.msg)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", c.name, resp.Header.Get("Cache-Control"))
		}
	}
}
