package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/valyala/fasthttp"

	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Config configures a Server. The zero value serves reads to everyone and
// refuses every write (Auth nil means OpenReads{}: anonymous reads only).
type Config struct {
	// Auth decides who reads and who writes. nil: anyone reads, nobody writes.
	Auth Authenticator
	// ReadOnly refuses every write, whatever Auth says.
	ReadOnly bool
	// StoreDir, Priority and NoMassQuery make up the nix-cache-info the
	// gateway serves (even when the store has none). Defaults: /nix/store,
	// 30 (as the original kiss-cache), WantMassQuery: 1.
	StoreDir    string
	Priority    int
	NoMassQuery bool
	// MaxUploadSize bounds one PUT body of NARs, logs and other bulk objects
	// (0: unlimited). narinfo, markers and leases have small fixed limits.
	MaxUploadSize int64
	// TrustedKeys, when set, refuse a narinfo without a valid signature by
	// one of them (--require-signature).
	TrustedKeys []signature.PublicKey
	// Upstream, when set, is a binary cache URL: a local miss of cache
	// content is fetched from it, streamed to the client and stored
	// (unrooted: the pruner removes it unless something reaches it).
	Upstream string
	// UpstreamClient fetches from Upstream (nil: a client with sane timeouts).
	UpstreamClient *http.Client
	// Redirect, when set, answers a reader's GET of cache content with a
	// 302 to a URL the store presigns (storage.Presigner: S3), so the bytes
	// go from the bucket to the client without passing through the
	// gateway, which only decides who may read. Clients must reach the
	// store's endpoint. Not with Upstream (a miss must be seen here).
	Redirect RedirectMode
	// RedirectTTL is how long a presigned URL stays valid (default 15m;
	// a download that has started is not cut when it expires).
	RedirectTTL time.Duration
	// PruneLeaseTTL is how long a prune lease stays fresh after its last
	// refresh, on the store's clock (default 30m, lockproto's default TTL;
	// a longer TTL declared in the lease wins). While it is fresh, new
	// writer leases are refused with 503.
	PruneLeaseTTL time.Duration
	// MaxLeaseTTL bounds how far the TTL a prune lease declares lengthens
	// it (default lockproto.DefaultMaxTTL; see lockproto.Judging).
	MaxLeaseTTL time.Duration
	// Prefix is a path prefix every request must carry ("/<secret>" for the
	// ephemeral endpoint). Requests outside it get 404.
	Prefix string
	// MinRate is the slowest transfer, in bytes per second, a client may
	// sustain before its connection is cut (default 64 KiB/s). It bounds
	// how long a slow or stalled client can hold a connection.
	MinRate int64
	// TransferGrace is the time every body transfer gets on top of
	// size/MinRate, and the step of the rolling deadline for bodies of
	// unknown length (default 1 minute).
	TransferGrace time.Duration
	// Logger receives the access log (nil: slog.Default()).
	Logger *slog.Logger
}

// RedirectMode says which reads are answered with a redirect to the store.
type RedirectMode int

const (
	RedirectNone RedirectMode = iota // every read streams through the gateway
	RedirectNARs                     // GETs of nar/* redirect; the rest streams
	RedirectAll                      // GETs of every content-addressed object redirect
)

// ParseRedirectMode reads "none", "nar" or "all".
func ParseRedirectMode(s string) (RedirectMode, error) {
	switch s {
	case "", "none":
		return RedirectNone, nil
	case "nar", "nars":
		return RedirectNARs, nil
	case "all":
		return RedirectAll, nil
	}
	return RedirectNone, fmt.Errorf("redirect mode %q: want none, nar or all", s)
}

// Server is the gateway: hand it to Serve (or Ephemeral) to listen.
type Server struct {
	st   storage.Store
	cfg  Config
	log  *slog.Logger
	m    *metrics
	info []byte
	upc  *http.Client
	// metricsHandler serves /metrics (promhttp, bridged to fasthttp).
	metricsHandler fasthttp.RequestHandler
	// authTLS: Auth looks at the TLS state (client certificates).
	authTLS bool
	// presigner is the store's, when reads redirect (Config.Redirect).
	presigner storage.Presigner
	// small caches small objects of a local store (nil otherwise).
	small *smallCache

	mirrorMu       sync.Mutex
	mirrorInFlight map[string]bool

	// cacheInfoStored: the store is known to hold a nix-cache-info (see
	// storeCacheInfo).
	cacheInfoStored atomic.Bool
}

// New returns the gateway for st. It does not start listening: hand it to
// Serve.
func New(st storage.Store, cfg Config) (*Server, error) {
	if st == nil {
		return nil, errors.New("gateway: nil store")
	}
	if cfg.Auth == nil {
		cfg.Auth = OpenReads{}
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = "/nix/store"
	}
	if !strings.HasPrefix(cfg.StoreDir, "/") || strings.ContainsAny(cfg.StoreDir, "\n\r") {
		return nil, fmt.Errorf("gateway: store dir %q is not an absolute path", cfg.StoreDir)
	}
	if cfg.Priority == 0 {
		cfg.Priority = 30
	}
	if cfg.PruneLeaseTTL <= 0 {
		cfg.PruneLeaseTTL = 30 * time.Minute
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 64 << 10
	}
	if cfg.TransferGrace <= 0 {
		cfg.TransferGrace = time.Minute
	}
	if cfg.MaxUploadSize < 0 {
		return nil, fmt.Errorf("gateway: negative upload size limit %d", cfg.MaxUploadSize)
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.Prefix != "" && !strings.HasPrefix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("gateway: prefix %q must start with /", cfg.Prefix)
	}
	if cfg.Upstream != "" {
		if !strings.HasPrefix(cfg.Upstream, "http://") && !strings.HasPrefix(cfg.Upstream, "https://") {
			return nil, fmt.Errorf("gateway: upstream %q is not an http(s) URL", cfg.Upstream)
		}
		cfg.Upstream = strings.TrimSuffix(cfg.Upstream, "/")
	}
	var presigner storage.Presigner
	if cfg.Redirect != RedirectNone {
		if cfg.Upstream != "" {
			return nil, errors.New("gateway: redirected reads and an upstream exclude each other (a miss must be seen by the gateway)")
		}
		ps, ok := storage.As[storage.Presigner](st)
		if !ok {
			return nil, fmt.Errorf("gateway: %s cannot presign URLs, so reads cannot redirect to it", st.URL())
		}
		presigner = ps
		if cfg.RedirectTTL <= 0 {
			cfg.RedirectTTL = 15 * time.Minute
		}
	}
	s := &Server{st: st, cfg: cfg, log: cfg.Logger, m: newMetrics(), upc: cfg.UpstreamClient, presigner: presigner}
	s.metricsHandler = s.m.handler()
	if st.Capabilities().Local {
		s.small = newSmallCache()
	}
	s.authTLS = usesTLS(cfg.Auth)
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.upc == nil {
		s.upc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16,
		}}
	}
	mass := 1
	if cfg.NoMassQuery {
		mass = 0
	}
	s.info = fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: %d\nPriority: %d\n", cfg.StoreDir, mass, cfg.Priority)
	return s, nil
}

// httpError is an error with its HTTP status and a metric reason.
type httpError struct {
	status int
	reason string // for kiss_gateway_rejected_writes_total; "" for reads
	msg    string
	retry  time.Duration
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, reason, format string, args ...any) *httpError {
	return &httpError{status: status, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// handler serves requests; store calls run under base (see exchange.ctx).
func (s *Server) handler(base context.Context) fasthttp.RequestHandler {
	return func(rc *fasthttp.RequestCtx) {
		x := &exchange{srv: s, rc: rc, ctx: base, method: methodName(rc), start: time.Now(), access: Access{Subject: "-"}}
		x.err = s.serve(x)
		if x.err != nil {
			s.writeError(x, x.err)
			if refusedUnread(x) {
				lingerClose(rc)
			}
		}
		if !x.streaming {
			n := int64(0)
			if x.method != fasthttp.MethodHead {
				n = int64(len(rc.Response.Body()))
			}
			s.finish(x, n, nil)
		}
	}
}

// refusedUnread: a refused upload whose body may still be on its way, more
// of it than fasthttp discards to keep the connection (256 KiB).
func refusedUnread(x *exchange) bool {
	if x.method != fasthttp.MethodPut || x.rc.Response.StatusCode() == fasthttp.StatusRequestTimeout {
		return false // no body, or a client too slow to wait for
	}
	n := bodyLength(&x.rc.Request.Header)
	return n == -1 || n > 256<<10
}

// lingerClose ends the connection of a refused upload the way nginx's
// lingering close does: the answer goes out, then what the client still
// sends is read and dropped, for a short while and up to a bound, before
// the connection closes, so the client reads the answer instead of a
// connection reset. (fasthttp would close at once.)
func lingerClose(rc *fasthttp.RequestCtx) {
	var answer bytes.Buffer
	rc.Response.Header.SetConnectionClose()
	_, _ = rc.Response.WriteTo(&answer)
	rc.HijackSetNoResponse(true)
	rc.Hijack(func(c net.Conn) {
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(answer.Bytes()); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<20))
	})
}

// methodName returns the request method as a constant string for the
// methods the gateway knows (no allocation on the read path).
func methodName(rc *fasthttp.RequestCtx) string {
	switch {
	case rc.IsGet():
		return fasthttp.MethodGet
	case rc.IsHead():
		return fasthttp.MethodHead
	case rc.IsPut():
		return fasthttp.MethodPut
	case rc.IsDelete():
		return fasthttp.MethodDelete
	case rc.IsPost():
		return fasthttp.MethodPost
	}
	return string(rc.Method())
}

// writeError answers the request with err's status, reason and message.
func (s *Server) writeError(x *exchange, err error) {
	s.answerError(x, err, s.httpErrorOf(x, err))
}

// answerError answers the request with he, what httpErrorOf made of err.
func (s *Server) answerError(x *exchange, err error, he *httpError) {
	var ae *AuthError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && x.hasHeader("Authorization") {
		x.set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	h := &x.rc.Response.Header
	if he.retry > 0 {
		h.Set("Retry-After", strconv.Itoa(int((he.retry+time.Second-1)/time.Second)))
	}
	if he.reason != "" {
		h.Set(httpstore.HeaderError, he.reason)
	}
	for _, k := range [...]string{"ETag", "Last-Modified", httpstore.HeaderMtime, "Accept-Ranges"} {
		h.Del(k)
	}
	h.SetContentType("text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	x.rc.Response.SetStatusCode(he.status)
	x.rc.Response.ResetBody()
	x.body([]byte(he.msg + "\n"))
}

// httpErrorOf maps an error to the answer it gets (status, reason, message)
// and counts a refused write.
func (s *Server) httpErrorOf(x *exchange, err error) *httpError {
	var he *httpError
	var ae *AuthError
	var re *httpstore.RemoteError
	switch {
	case errors.As(err, &ae):
		he = &httpError{status: ae.Status, reason: "unauthenticated", msg: "authentication required"}
	case errors.As(err, &he):
	case errors.As(err, &re):
		// The store is itself a gateway (the ephemeral endpoint over the
		// https client store): pass its refusal on unchanged.
		he = &httpError{status: re.Status, reason: re.Reason, msg: re.Message, retry: re.RetryAfter}
		if he.msg == "" {
			he.msg = http.StatusText(re.Status)
		}
	case errors.Is(err, storage.ErrNotFound):
		he = fail(http.StatusNotFound, "", "not found")
	case errors.Is(err, storage.ErrInvalidKey):
		he = fail(http.StatusBadRequest, "invalid_key", "%v", err)
	case errors.Is(err, nixcache.ErrInvalidMarker):
		he = fail(http.StatusBadRequest, "malformed", "%v", err)
	case errors.Is(err, storage.ErrPreconditionFailed):
		he = fail(http.StatusPreconditionFailed, "precondition_failed", "precondition failed")
	case errors.Is(err, storage.ErrConflict):
		he = fail(http.StatusConflict, "conflict", "conflicting concurrent request, retry")
		he.retry = time.Second
	case errors.Is(err, storage.ErrNotSupported):
		he = fail(http.StatusNotImplemented, "not_supported", "%v", err)
	case errors.Is(err, context.Canceled):
		he = fail(499, "", "client went away")
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// The store's disk is full: not the client's fault, nor a broken
		// store. 507, so clients and proxies see it for what it is, and an
		// error in the log, so the operator does before the writers.
		he = fail(http.StatusInsufficientStorage, "insufficient_storage", "insufficient storage")
		s.log.Error("the store is out of space", "method", x.method, "path", x.path, "err", err)
	default:
		he = fail(http.StatusBadGateway, "store_error", "store error")
	}
	if he.reason != "" && isWrite(x.method) {
		s.m.rejected.WithLabelValues(he.reason).Inc()
	}
	return he
}

func isWrite(m string) bool {
	return m == http.MethodPut || m == http.MethodDelete || m == http.MethodPost
}

// serve routes one request.
func (s *Server) serve(x *exchange) error {
	p, err := s.target(x)
	if err != nil {
		return err
	}
	if p == "/healthz" {
		x.rc.Response.Header.SetContentType("text/plain; charset=utf-8")
		x.set("Cache-Control", "no-store")
		x.body([]byte("ok\n"))
		return nil
	}
	a, err := s.cfg.Auth.Authenticate(x.ctx, credentials(x.rc, s.authTLS))
	if err != nil {
		return err
	}
	x.access = a
	key := p[1:]
	q := x.rc.QueryArgs()
	switch {
	case key == "metrics" && (x.method == http.MethodGet || x.method == http.MethodHead):
		if !a.Read {
			return fail(http.StatusForbidden, "", "forbidden")
		}
		s.metricsHandler(x.rc)
		return nil
	case q.Has("list"):
		if x.method != http.MethodGet {
			return methodNotAllowed(x, "GET")
		}
		return s.list(x, key)
	case key == "" && string(q.Peek("kiss")) == "info":
		return s.serverInfo(x)
	}
	switch x.method {
	case http.MethodGet, http.MethodHead:
		return s.get(x, key)
	case http.MethodPut:
		return s.put(x, key)
	case http.MethodDelete:
		return s.delete(x, key)
	default:
		return methodNotAllowed(x, "GET, HEAD, PUT, DELETE")
	}
}

// target reads the request's path: unescaped, without the endpoint's
// prefix ("/" at least). It also sets what the access log shows.
func (s *Server) target(x *exchange) (string, error) {
	p, err := url.PathUnescape(string(x.rc.URI().PathOriginal()))
	if err != nil || !strings.HasPrefix(p, "/") {
		x.path = "?"
		return "", fail(http.StatusBadRequest, "bad_path", "malformed request path")
	}
	x.path = p
	if s.cfg.Prefix != "" {
		// constant-time: the ephemeral endpoint's prefix is its credential
		n := len(s.cfg.Prefix)
		if len(p) < n || subtle.ConstantTimeCompare([]byte(p[:n]), []byte(s.cfg.Prefix)) != 1 || (len(p) > n && p[n] != '/') {
			x.path = "/…"
			return "", fail(http.StatusNotFound, "", "not found")
		}
		p = p[n:]
		x.path = "/…" + p // the secret prefix stays out of logs
	}
	if p == "" {
		p = "/"
	}
	return p, nil
}

// expect answers a request that sent "Expect: 100-continue" before its
// body comes: 100 Continue, or — when its headers alone already decide —
// the final answer the handler would give it (401/403, 400 for a key that
// cannot be written, 413 for a Content-Length over the limit, each with
// its X-Kiss-Error reason and message), so a refused upload is never sent.
// fasthttp then sends that answer and closes the connection without
// running the handler; the refusal is counted and logged here.
func (s *Server) expect(base context.Context) func(*fasthttp.RequestCtx) int {
	return func(rc *fasthttp.RequestCtx) int {
		x := &exchange{srv: s, rc: rc, ctx: base, method: methodName(rc), start: time.Now(), access: Access{Subject: "-"}}
		err := s.admitBody(x)
		if err == nil {
			return fasthttp.StatusContinue
		}
		// The refusal is answered like any other (fasthttp sends the
		// response as the handler left it, with the status returned).
		he := s.httpErrorOf(x, err)
		s.answerError(x, err, he)
		s.m.observe(x.method, he.status, time.Since(x.start), 0)
		s.log.Info("request refused before its body (Expect: 100-continue)", "method", x.method, "path", x.path,
			"status", he.status, "remote", rc.RemoteAddr().String(), "subject", x.access.Subject, "err", he.msg)
		return he.status
	}
}

// admitBody decides from the headers alone whether a request's body may
// come: the path, the credentials, and for a PUT the key and the size.
func (s *Server) admitBody(x *exchange) error {
	p, err := s.target(x)
	if err != nil || p == "/healthz" {
		return err
	}
	a, err := s.cfg.Auth.Authenticate(x.ctx, credentials(x.rc, s.authTLS))
	if err != nil {
		return err
	}
	x.access = a
	if x.method != http.MethodPut || x.rc.QueryArgs().Len() > 0 {
		return nil // a PUT with a query is refused by the handler, body or not
	}
	_, _, err = s.admitPut(x, p[1:])
	return err
}

func methodNotAllowed(x *exchange, allow string) error {
	x.set("Allow", allow)
	return fail(http.StatusMethodNotAllowed, "method", "method not allowed")
}

func (s *Server) serverInfo(x *exchange) error {
	a := x.access
	if !a.Read {
		return fail(http.StatusForbidden, "", "forbidden")
	}
	now, err := s.st.Now(x.ctx)
	if err != nil {
		return err
	}
	caps := s.st.Capabilities()
	caps.Local = false
	caps.MaxBatchDelete = 0
	b, err := json.Marshal(httpstore.Info{Now: now.UTC(), Capabilities: caps, ReadOnly: s.cfg.ReadOnly, Read: a.Read, Write: a.Write && !s.cfg.ReadOnly})
	if err != nil {
		return err
	}
	x.rc.Response.Header.SetContentType("application/json")
	x.set("Cache-Control", "no-store")
	x.set(httpstore.HeaderNow, now.UTC().Format(time.RFC3339Nano))
	x.body(append(b, '\n'))
	return nil
}

func (s *Server) list(x *exchange, prefix string) error {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return fail(http.StatusBadRequest, "", "%v", err)
	}
	a := x.access
	// Leases are writers' business (as the original's lock directory);
	// markers are a deployment channel any reader may follow; the rest of
	// the cache is enumerable by writers only.
	var keep func(string) bool
	switch {
	case strings.HasPrefix(prefix, nixcache.LockPrefix), strings.HasPrefix(prefix, nixcache.KissPrefix):
		if !a.Write {
			return fail(http.StatusForbidden, "", "forbidden")
		}
	case strings.HasPrefix(prefix, nixcache.RootsPrefix) || prefix+"/" == nixcache.RootsPrefix:
		if !a.Read {
			return fail(http.StatusForbidden, "", "forbidden")
		}
		if !a.Write {
			keep = func(k string) bool { return !strings.HasPrefix(k, nixcache.LockPrefix) }
		}
	default:
		if !a.Write {
			return fail(http.StatusForbidden, "", "forbidden")
		}
	}
	next, stop := iter.Pull2(s.st.List(x.ctx, prefix))
	// The first entry (or error) is read before the status is sent, so a
	// listing that fails at once is an HTTP error, not a 200.
	obj, err, ok := next()
	if ok && err != nil {
		stop()
		return err
	}
	x.rc.Response.Header.SetContentType("application/x-ndjson")
	x.set("Cache-Control", "no-store")
	ls := &listStream{next: next, stop: stop, keep: keep, pending: obj, more: ok}
	x.stream(ls, ls, -1)
	return nil
}

// listStream is a listing's body: JSON lines made as the connection reads
// them, ending with a httpstore.ListTrailer.
type listStream struct {
	next    func() (storage.Object, error, bool)
	stop    func()
	keep    func(string) bool
	pending storage.Object // the entry read before the status was sent
	more    bool           // pending is valid
	buf     bytes.Buffer
	n       int
	done    bool
}

func (l *listStream) Read(p []byte) (int, error) {
	enc := json.NewEncoder(&l.buf)
	for l.buf.Len() < len(p) && !l.done {
		if !l.more {
			_ = enc.Encode(httpstore.ListTrailer{End: true, Count: l.n})
			l.done = true
			break
		}
		obj := l.pending
		if l.keep == nil || l.keep(obj.Key) {
			_ = enc.Encode(httpstore.ListEntry{Key: obj.Key, Size: obj.Size, MTime: obj.ModTime.UTC(), ETag: httpstore.ETag(obj.ETag)})
			l.n++
		}
		var err error
		l.pending, err, l.more = l.next()
		if l.more && err != nil {
			_ = enc.Encode(httpstore.ListTrailer{End: false, Count: l.n, Error: err.Error()})
			l.done = true
		}
	}
	if l.buf.Len() == 0 {
		return 0, io.EOF
	}
	return l.buf.Read(p)
}

func (l *listStream) Close() error {
	l.stop()
	return nil
}

// storageETag resolves an entity tag a client sent (If-Match) to the store's
// own ETag of the current object. The store then compares atomically; this
// only translates. ErrNotFound if the key is absent; "" with no error if the
// tag does not match the current version (the write must fail with 412).
func (s *Server) storageETag(ctx context.Context, key, tag string) (string, error) {
	obj, err := s.st.Stat(ctx, key)
	if err != nil {
		return "", err
	}
	for _, t := range strings.Split(tag, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == httpstore.ETag(obj.ETag) || t == obj.ETag {
			return obj.ETag, nil
		}
	}
	return "", nil
}

func (s *Server) setObjectHeaders(x *exchange, k nixcache.Kind, obj storage.Object) {
	h := &x.rc.Response.Header
	r := k.Rules()
	h.SetContentType(r.ContentType)
	h.Set("Cache-Control", r.CacheControl)
	if obj.ETag != "" {
		h.Set("ETag", httpstore.ETag(obj.ETag))
	}
	if !obj.ModTime.IsZero() {
		mt := obj.ModTime.UTC()
		h.Set(httpstore.HeaderMtime, mt.Format(time.RFC3339Nano))
		h.SetLastModified(mt)
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Content-Type-Options", "nosniff")
}

// deadline gives a transfer of n bytes time at MinRate plus TransferGrace, so a
// stalled client cannot hold a connection (and an S3 stream) for ever.
func (s *Server) deadline(n int64) time.Time {
	if n < 0 {
		n = 0
	}
	return time.Now().Add(s.cfg.TransferGrace + time.Duration(n/s.cfg.MinRate)*time.Second)
}
