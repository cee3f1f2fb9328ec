package storagetest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// S3 operation names a ProxyFault can match, as S3Op derives them from a
// path-style request (the only style kiss uses with a custom endpoint).
const (
	S3HeadBucket    = "HeadBucket"
	S3ListObjects   = "ListObjectsV2"
	S3DeleteObjects = "DeleteObjects"
	S3GetObject     = "GetObject"
	S3HeadObject    = "HeadObject"
	S3PutObject     = "PutObject"
	S3DeleteObject  = "DeleteObject"
	S3Multipart     = "Multipart" // create, upload part, complete, abort
	S3Other         = "Other"
)

// S3Op names the S3 operation of a path-style request (/bucket[/key]) and
// returns the object key ("" for bucket operations).
func S3Op(r *http.Request) (op, key string) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(p, "/")
	q := r.URL.Query()
	switch {
	case bucket == "":
		return S3Other, ""
	case q.Has("uploads") || q.Has("uploadId"):
		return S3Multipart, key
	case key == "":
		switch {
		case r.Method == http.MethodHead:
			return S3HeadBucket, ""
		case r.Method == http.MethodPost && q.Has("delete"):
			return S3DeleteObjects, ""
		case r.Method == http.MethodGet && (q.Has("list-type") || len(q) == 0 || q.Has("prefix")):
			return S3ListObjects, ""
		}
		return S3Other, ""
	}
	switch r.Method {
	case http.MethodGet:
		return S3GetObject, key
	case http.MethodHead:
		return S3HeadObject, key
	case http.MethodPut:
		return S3PutObject, key
	case http.MethodDelete:
		return S3DeleteObject, key
	}
	return S3Other, key
}

// ProxyFault is one rule of a FaultProxy. A request matches when its S3
// operation and key agree (empty Op / KeyPrefix match everything); the Nth
// matching request (1-based; 0 means the first) and the Times-1 following
// ones (Times 0 means 1, negative means forever) are affected, each with
// probability Prob (0 means always). What happens to an affected request:
//
//   - Delay is slept first (then the request goes on as below);
//   - Status > 0 without Applied: answered with that status and an S3 XML
//     error, never forwarded (a 503 SlowDown, a 500 InternalError);
//   - Reset without Applied: the connection is reset (TCP RST), never
//     forwarded;
//   - Applied: forwarded, the server applies it, and then the answer is
//     replaced by Status (if > 0) or a connection reset — a response lost
//     after the write landed, the ambiguous case every retry must resolve.
type ProxyFault struct {
	Op        string
	KeyPrefix string
	Nth       int
	Times     int
	Prob      float64
	Delay     time.Duration
	Status    int
	Reset     bool
	Applied   bool
}

type proxyRule struct {
	ProxyFault
	seen, fired int
}

// FaultProxy is an HTTP reverse proxy in front of an S3 endpoint that
// injects faults by rule: error statuses, connection resets, delays, and
// responses dropped after the server applied the request. It counts
// requests by S3 operation and faults by kind. Point an s3:// store URL's
// endpoint at URL. Safe for concurrent use; closed at the test's end.
type FaultProxy struct {
	// URL is the proxy's base URL (http://127.0.0.1:PORT).
	URL string

	rp     *httputil.ReverseProxy
	srv    *httptest.Server
	closed chan struct{} // ends held (delayed) requests when the test ends

	mu     sync.Mutex
	rules  []*proxyRule
	rng    *rand.Rand
	ops    map[string]int
	keys   map[string]int // op + " " + key
	faults map[string]int
	shift  *ClockShift // nil: the store's own clock
}

// Cleanup is what NewFaultProxy needs from a testing.TB.
type Cleanup interface{ Cleanup(func()) }

// NewFaultProxy starts a proxy to target (an http:// endpoint) on
// 127.0.0.1; seed makes probabilistic rules reproducible. It stops when
// the test ends.
func NewFaultProxy(t Cleanup, target string, seed uint64) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fault proxy: target %q is not a URL", target)
	}
	p := &FaultProxy{
		closed: make(chan struct{}),
		rp:     httputil.NewSingleHostReverseProxy(u),
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ops:    map[string]int{},
		keys:   map[string]int{},
		faults: map[string]int{},
	}
	// The proxy's own errors (the target went away) must look like what
	// they are: a gateway failure, which S3 clients retry.
	p.rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		p.s3Error(w, http.StatusBadGateway, "ProxyError", err.Error())
	}
	p.rp.Transport = resigner{p: p, next: http.DefaultTransport}
	p.rp.ModifyResponse = p.shiftResponse
	p.srv = httptest.NewServer(p)
	p.URL = p.srv.URL
	t.Cleanup(func() {
		close(p.closed)
		p.srv.Close()
	})
	return p, nil
}

// Inject adds a rule; rules are checked in order and the first that fires wins.
func (p *FaultProxy) Inject(f ProxyFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &proxyRule{ProxyFault: f})
}

// Reset removes every rule (counts are kept).
func (p *FaultProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Requests returns how many requests of op (S3 operation name; "" for all)
// reached the proxy.
func (p *FaultProxy) Requests(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if op == "" {
		n := 0
		for _, c := range p.ops {
			n += c
		}
		return n
	}
	return p.ops[op]
}

// RequestsFor returns how many requests of op named key.
func (p *FaultProxy) RequestsFor(op, key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[op+" "+key]
}

// Faults returns how many faults of each kind fired: "status", "reset",
// "delay", "applied-status", "applied-reset", and, with a shifted clock,
// "request-time-too-skewed" and "clock-shift-refused" (see ClockShift).
func (p *FaultProxy) Faults() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.faults))
	for k, v := range p.faults {
		out[k] = v
	}
	return out
}

func (p *FaultProxy) count(kind string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[kind]++
}

func (p *FaultProxy) match(op, key string) (ProxyFault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops[op]++
	p.keys[op+" "+key]++
	for _, r := range p.rules {
		if r.Op != "" && r.Op != op {
			continue
		}
		if r.KeyPrefix != "" && !strings.HasPrefix(key, r.KeyPrefix) {
			continue
		}
		r.seen++
		if !inWindow(r.seen, r.Nth, r.Times) {
			continue
		}
		if r.Prob > 0 && p.rng.Float64() >= r.Prob {
			continue
		}
		r.fired++
		f := r.ProxyFault
		switch {
		case f.Applied && f.Status > 0:
			p.faults["applied-status"]++
		case f.Applied:
			p.faults["applied-reset"]++
		case f.Status > 0:
			p.faults["status"]++
		case f.Reset:
			p.faults["reset"]++
		}
		if f.Delay > 0 {
			p.faults["delay"]++
		}
		return f, true
	}
	return ProxyFault{}, false
}

// ServeHTTP implements http.Handler.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, key := S3Op(r)
	f, hit := p.match(op, key)
	if c := p.clockShift(); c != nil && !p.admitShifted(w, r, c) {
		return
	}
	if !hit {
		p.rp.ServeHTTP(w, r)
		return
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-p.closed:
			t.Stop()
			return
		case <-t.C:
		}
	}
	switch {
	case f.Applied:
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		if f.Status > 0 {
			p.s3Error(w, f.Status, statusCode(f.Status), "response lost after the request was applied (injected)")
			return
		}
		resetConn(w)
	case f.Status > 0:
		// Drain what the client sends, so it reads the answer, not a reset.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		p.s3Error(w, f.Status, statusCode(f.Status), "injected fault")
	case f.Reset:
		resetConn(w)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

func statusCode(status int) string {
	switch status {
	case http.StatusServiceUnavailable:
		return "SlowDown"
	case http.StatusInternalServerError:
		return "InternalError"
	}
	return strings.ReplaceAll(http.StatusText(status), " ", "")
}

// s3Error answers with an S3 XML error, dated by the store's clock.
func (p *FaultProxy) s3Error(w http.ResponseWriter, status int, code, msg string) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Error><Code>%s</Code><Message>", code)
	_ = xml.EscapeText(&b, []byte(msg))
	b.WriteString("</Message></Error>")
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Connection", "close")
	w.Header().Set("Date", p.storeNow().UTC().Format(http.TimeFormat))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// resetConn ends the request's connection with a TCP RST: SO_LINGER 0,
// then close, so the client reads "connection reset by peer".
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: the response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// ProxyBucket starts a fault proxy in front of an S3 endpoint and returns it
// with the store URL of bucketURL (an s3:// URL on that endpoint) through it.
func ProxyBucket(t interface {
	Cleanup(func())
	Fatal(...any)
}, endpoint, bucketURL string, seed uint64) (*FaultProxy, string) {
	p, err := NewFaultProxy(t, endpoint, seed)
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.StoreURL(bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	return p, u
}

// StoreURL returns s3URL (an s3:// store URL with an endpoint parameter)
// with its endpoint pointed at the proxy.
func (p *FaultProxy) StoreURL(s3URL string) (string, error) {
	u, err := url.Parse(s3URL)
	if err != nil || u.Scheme != "s3" {
		return "", fmt.Errorf("fault proxy: %q is not an s3:// URL", s3URL)
	}
	q := u.Query()
	if q.Get("endpoint") == "" {
		return "", fmt.Errorf("fault proxy: %q has no endpoint to replace", s3URL)
	}
	q.Set("endpoint", p.URL)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
