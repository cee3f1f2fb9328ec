package gateway

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

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
	// PruneLeaseTTL is how long a prune lease stays fresh after its last
	// refresh, on the store's clock (default 30m, lockproto's default TTL;
	// a longer TTL declared in the lease wins). While it is fresh, new
	// writer leases are refused with 503.
	PruneLeaseTTL time.Duration
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

// Limits on bodies the gateway parses in memory.
const (
	maxNarinfoSize = 1 << 20
	maxMarkerSize  = 4 << 10
	maxLeaseSize   = 64 << 10 // lockproto/PROTOCOL.md: a lease body is at most 64 KiB
	maxInfoSize    = 4 << 10
)

// Server is the gateway's http.Handler.
type Server struct {
	st   storage.Store
	cfg  Config
	log  *slog.Logger
	m    *metrics
	info []byte
	upc  *http.Client

	mirrorMu       sync.Mutex
	mirrorInFlight map[string]bool
}

// New returns the gateway for st. It does not start listening: hand it to an
// http.Server (see Serve / ListenAndServe) or mount it under a mux.
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
	s := &Server{st: st, cfg: cfg, log: cfg.Logger, m: newMetrics(), upc: cfg.UpstreamClient}
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

// Metrics is the Prometheus exposition of this server's metrics, for a
// separate listener (it is also served at /metrics to readers).
func (s *Server) Metrics() http.Handler { return s.m.handler() }

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

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	access := Access{Subject: "-"}
	var err error
	defer func() {
		d := time.Since(start)
		s.m.observe(r.Method, rec.status(), d, rec.n)
		attrs := []any{
			"method", r.Method, "path", s.logPath(r), "status", rec.status(), "bytes", rec.n,
			"duration", d, "remote", r.RemoteAddr, "subject", access.Subject,
		}
		if err != nil && rec.status() != http.StatusNotFound && rec.status() != http.StatusNotModified {
			attrs = append(attrs, "err", err)
		}
		s.log.Info("request", attrs...)
	}()
	err = s.serve(rec, r, &access)
	if err != nil {
		s.writeError(rec, r, err)
	}
}

// logPath hides the ephemeral endpoint's secret prefix from logs.
func (s *Server) logPath(r *http.Request) string {
	p := r.URL.Path
	if s.cfg.Prefix != "" {
		if rest, ok := strings.CutPrefix(p, s.cfg.Prefix); ok {
			return "/…" + rest
		}
	}
	return p
}

func (s *Server) writeError(w *recorder, r *http.Request, err error) {
	var he *httpError
	var ae *AuthError
	var re *RemoteError
	switch {
	case errors.As(err, &ae):
		he = &httpError{status: ae.Status, reason: "unauthenticated", msg: "authentication required"}
		if ae.Status == http.StatusUnauthorized && r.Header.Get("Authorization") != "" {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
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
	case errors.Is(err, storage.ErrPreconditionFailed):
		he = fail(http.StatusPreconditionFailed, "precondition_failed", "precondition failed")
	case errors.Is(err, storage.ErrConflict):
		he = fail(http.StatusConflict, "conflict", "conflicting concurrent request, retry")
		he.retry = time.Second
	case errors.Is(err, storage.ErrNotSupported):
		he = fail(http.StatusNotImplemented, "not_supported", "%v", err)
	case errors.Is(err, context.Canceled):
		he = fail(499, "", "client went away")
	default:
		he = fail(http.StatusBadGateway, "store_error", "store error")
	}
	if he.reason != "" && isWrite(r.Method) {
		s.m.rejected.WithLabelValues(he.reason).Inc()
	}
	if w.code != 0 {
		return // headers already sent (a stream broke); the log has err
	}
	if he.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((he.retry+time.Second-1)/time.Second)))
	}
	h := w.Header()
	if he.reason != "" {
		h.Set(headerError, he.reason)
	}
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.status)
	if r.Method != http.MethodHead {
		io.WriteString(w, he.msg+"\n")
	}
}

func isWrite(m string) bool {
	return m == http.MethodPut || m == http.MethodDelete || m == http.MethodPost
}

func (s *Server) serve(w *recorder, r *http.Request, access *Access) error {
	p := r.URL.Path
	if s.cfg.Prefix != "" {
		// constant-time: the ephemeral endpoint's prefix is its credential
		n := len(s.cfg.Prefix)
		if len(p) < n || subtle.ConstantTimeCompare([]byte(p[:n]), []byte(s.cfg.Prefix)) != 1 || (len(p) > n && p[n] != '/') {
			return fail(http.StatusNotFound, "", "not found")
		}
		p = p[n:]
	}
	if p == "" {
		p = "/"
	}
	if p == "/healthz" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "ok\n")
		return nil
	}
	a, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		return err
	}
	*access = a
	key := strings.TrimPrefix(p, "/")
	q := r.URL.Query()
	switch {
	case key == "metrics" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		if !a.Read {
			return fail(http.StatusForbidden, "", "forbidden")
		}
		s.m.handler().ServeHTTP(w, r)
		return nil
	case q.Has("list"):
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, "GET")
		}
		return s.list(w, r, a, key)
	case key == "" && q.Get("kiss") == "info":
		return s.serverInfo(w, r, a)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return s.get(w, r, a, key)
	case http.MethodPut:
		return s.put(w, r, a, key)
	case http.MethodDelete:
		return s.delete(w, r, a, key)
	default:
		return methodNotAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return fail(http.StatusMethodNotAllowed, "method", "method not allowed")
}

// info is the body of GET /?kiss=info: the store's clock and guarantees, so
// a remote client store reports the real Capabilities and Now (invariant I6:
// time comes from the store, not from the client).
type info struct {
	Now          time.Time            `json:"now"`
	Capabilities storage.Capabilities `json:"capabilities"`
	ReadOnly     bool                 `json:"readOnly"`
	Read         bool                 `json:"read"`
	Write        bool                 `json:"write"`
}

func (s *Server) serverInfo(w http.ResponseWriter, r *http.Request, a Access) error {
	if !a.Read {
		return fail(http.StatusForbidden, "", "forbidden")
	}
	now, err := s.st.Now(r.Context())
	if err != nil {
		return err
	}
	caps := s.st.Capabilities()
	caps.Local = false
	caps.MaxBatchDelete = 0
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(headerNow, now.UTC().Format(time.RFC3339Nano))
	return json.NewEncoder(w).Encode(info{Now: now.UTC(), Capabilities: caps, ReadOnly: s.cfg.ReadOnly, Read: a.Read, Write: a.Write && !s.cfg.ReadOnly})
}

// Response headers of the gateway's own API.
const (
	headerNow   = "X-Kiss-Now"   // the store's clock (RFC 3339, ns)
	headerMtime = "X-Kiss-Mtime" // the object's ModTime on the store's clock (RFC 3339, ns)
	headerSize  = "X-Kiss-Size"
	// headerError names why a request was refused (a metric reason such as
	// "missing_reference", "prune_in_progress", "conflict"), so the client
	// store can map it to the right error without parsing prose.
	headerError = "X-Kiss-Error"
)

// listEntry is one JSON line of a listing.
type listEntry struct {
	Key   string    `json:"key,omitempty"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	ETag  string    `json:"etag,omitempty"`
}

// listTrailer ends every listing: a client that does not see it knows the
// listing was cut short and must not treat it as complete (fail closed).
type listTrailer struct {
	End   bool   `json:"end"`
	Count int    `json:"count"`
	Error string `json:"error,omitempty"`
}

func (s *Server) list(w *recorder, r *http.Request, a Access, prefix string) error {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return fail(http.StatusBadRequest, "", "%v", err)
	}
	// Leases are writers' business (as the original's lock directory);
	// markers are a deployment channel any reader may follow; the rest of
	// the cache is enumerable by writers only.
	var keep func(string) bool
	switch {
	case strings.HasPrefix(prefix, lockPrefix), strings.HasPrefix(prefix, ".kiss/"):
		if !a.Write {
			return fail(http.StatusForbidden, "", "forbidden")
		}
	case strings.HasPrefix(prefix, gcrootsPrefix) || prefix == "gcroots":
		if !a.Read {
			return fail(http.StatusForbidden, "", "forbidden")
		}
		if !a.Write {
			keep = func(k string) bool { return !strings.HasPrefix(k, lockPrefix) }
		}
	default:
		if !a.Write {
			return fail(http.StatusForbidden, "", "forbidden")
		}
	}
	return s.listFiltered(w, r, prefix, keep)
}

func (s *Server) listFiltered(w *recorder, r *http.Request, prefix string, keep func(string) bool) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	n := 0
	for obj, err := range s.st.List(r.Context(), prefix) {
		if err != nil {
			if w.code == 0 {
				return err
			}
			return enc.Encode(listTrailer{End: false, Count: n, Error: err.Error()})
		}
		if keep != nil && !keep(obj.Key) {
			continue
		}
		if err := enc.Encode(listEntry{Key: obj.Key, Size: obj.Size, MTime: obj.ModTime.UTC(), ETag: httpETag(obj.ETag)}); err != nil {
			return err
		}
		n++
	}
	return enc.Encode(listTrailer{End: true, Count: n})
}

// httpETag makes a storage ETag a valid HTTP entity tag (quoted).
func httpETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) || strings.HasPrefix(e, `W/"`) {
		return e
	}
	return `"` + strings.ReplaceAll(e, `"`, "") + `"`
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
		if t == "*" || t == httpETag(obj.ETag) || t == obj.ETag {
			return obj.ETag, nil
		}
	}
	return "", nil
}

func (s *Server) setObjectHeaders(w http.ResponseWriter, k kind, key string, obj storage.Object) {
	h := w.Header()
	h.Set("Content-Type", contentType(k, key))
	h.Set("Cache-Control", cacheControl(k))
	if obj.ETag != "" {
		h.Set("ETag", httpETag(obj.ETag))
	}
	if !obj.ModTime.IsZero() {
		h.Set(headerMtime, obj.ModTime.UTC().Format(time.RFC3339Nano))
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
