package httpstore

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// Options authenticate the client to a gateway. They are all explicit:
// the package reads no environment and no flags (cmd/kiss does, and passes
// them here).
type Options struct {
	// CertFile and KeyFile are a PEM client certificate and key (mTLS).
	CertFile, KeyFile string
	// CAFile is a PEM bundle the server certificate must chain to (default:
	// the system roots).
	CAFile string
	// Bearer is sent as "Authorization: Bearer <token>" (OIDC).
	Bearer string
	// HTTPClient replaces the client built from the fields above (tests).
	HTTPClient *http.Client
}

// Sentinels for gateway refusals that have no storage equivalent. The
// returned errors also carry *RemoteError with the status and reason.
var (
	// ErrPruneInProgress: a fresh prune lease exists, so the gateway refused
	// a new writer lease (503). Transient: back off (RemoteError.RetryAfter)
	// and retry.
	ErrPruneInProgress = errors.New("cache is being pruned")
	// ErrUnauthorized: no or invalid credentials (401).
	ErrUnauthorized = errors.New("not authenticated")
	// ErrForbidden: authenticated, but not allowed (403), e.g. a reader
	// writing, or a read-only gateway.
	ErrForbidden = errors.New("forbidden")
	// ErrRejected: the gateway refused the content (400/409/413 from write
	// validation: a narinfo whose NAR or reference is missing, a malformed
	// marker, a body over the limit). Permanent for this body.
	ErrRejected = errors.New("rejected by the gateway")
)

// RemoteError is a gateway's refusal: status, reason (X-Kiss-Error) and message.
type RemoteError struct {
	Status     int
	Reason     string
	Message    string
	RetryAfter time.Duration
	sentinel   error
}

func (e *RemoteError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Reason != "" {
		return fmt.Sprintf("gateway: %d %s: %s", e.Status, e.Reason, msg)
	}
	return fmt.Sprintf("gateway: %d: %s", e.Status, msg)
}

func (e *RemoteError) Unwrap() error { return e.sentinel }

// PruneInProgress reports a 503 for a new writer lease while a fresh prune
// lease exists. lockproto can test for it without importing gateway:
// errors.As(err, &x) with x of type interface{ PruneInProgress() bool }.
func (e *RemoteError) PruneInProgress() bool { return errors.Is(e.sentinel, ErrPruneInProgress) }

// Transient: a prune in progress, a conflict and 5xx errors may pass on retry.
func (e *RemoteError) Transient() bool {
	return errors.Is(e.sentinel, ErrPruneInProgress) || errors.Is(e.sentinel, storage.ErrConflict) ||
		(e.Status >= 500 && e.Status != http.StatusNotImplemented)
}

// Client is a storage.Store over a kiss gateway's HTTP API. Conditional
// writes map to If-None-Match: * / If-Match and fail with
// storage.ErrPreconditionFailed on 412; Now and Capabilities come from the
// gateway's store (GET /?kiss=info), so the lock protocol runs over it
// unchanged.
type Client struct {
	base *url.URL // no trailing slash
	hc   *http.Client
	auth string

	mu   sync.Mutex
	caps *storage.Capabilities
}

var _ storage.Store = (*Client)(nil)

// loopbackHost reports whether a URL's host name is this host's loopback.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Open returns a client store for a gateway base URL
// ("https://cache.example.org", "http://127.0.0.1:8080/<token>"). A bearer
// token is never sent over plain http:// to another host.
func Open(rawURL string, o Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q: want http(s)://host[:port][/path]", storage.ErrInvalidURL, rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %q: credentials in the URL are not supported (use a client certificate or a bearer token)", storage.ErrInvalidURL, u.Redacted())
	}
	if o.Bearer != "" && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		// Anyone on the path would read the token and could write with it.
		return nil, fmt.Errorf("%w: %q: a bearer token is not sent over plain http:// to another host (use https://)", storage.ErrInvalidURL, u.Redacted())
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, hc: o.HTTPClient}
	if o.Bearer != "" {
		c.auth = "Bearer " + o.Bearer
	}
	if c.hc == nil {
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16,
			ForceAttemptHTTP2:     true,
		}
		if o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" {
			tc := &tls.Config{MinVersion: tls.VersionTLS12}
			if o.CertFile != "" || o.KeyFile != "" {
				if o.CertFile == "" || o.KeyFile == "" {
					return nil, errors.New("http store: a client certificate needs both a certificate and a key file")
				}
				cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
				if err != nil {
					return nil, fmt.Errorf("http store: client certificate: %w", err)
				}
				tc.Certificates = []tls.Certificate{cert}
			}
			if o.CAFile != "" {
				pem, err := os.ReadFile(o.CAFile)
				if err != nil {
					return nil, fmt.Errorf("http store: CA file: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("http store: no certificate in CA file %s", o.CAFile)
				}
				tc.RootCAs = pool
			}
			tr.TLSClientConfig = tc
		}
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// URL is the gateway's base URL.
func (c *Client) URL() string { return c.base.String() }

// Close drops idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

func (c *Client) keyURL(key string, list bool) string {
	u := *c.base
	segs := strings.Split(key, "/")
	esc := make([]string, len(segs))
	for i, s := range segs {
		esc[i] = url.PathEscape(s)
	}
	u.RawPath = c.base.EscapedPath() + "/" + strings.Join(esc, "/")
	u.Path = c.base.Path + "/" + key
	if list {
		u.RawQuery = "list=1"
	}
	return u.String()
}

func (c *Client) do(ctx context.Context, method, u string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	return c.hc.Do(req)
}

// remoteError turns an unexpected response into an error wrapping the right
// sentinel, and closes its body.
func remoteError(op, key string, resp *http.Response) error {
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	re := &RemoteError{Status: resp.StatusCode, Reason: resp.Header.Get(HeaderError), Message: strings.TrimSpace(string(msg))}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra >= 0 {
		re.RetryAfter = time.Duration(ra) * time.Second
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		re.sentinel = storage.ErrNotFound
	case resp.StatusCode == http.StatusPreconditionFailed:
		re.sentinel = storage.ErrPreconditionFailed
	case resp.StatusCode == http.StatusConflict && re.Reason == "conflict":
		re.sentinel = storage.ErrConflict
	case resp.StatusCode == http.StatusServiceUnavailable && re.Reason == "prune_in_progress":
		re.sentinel = ErrPruneInProgress
	case resp.StatusCode == http.StatusBadRequest && re.Reason == "invalid_key":
		re.sentinel = storage.ErrInvalidKey
	case resp.StatusCode == http.StatusUnauthorized:
		re.sentinel = ErrUnauthorized
	case resp.StatusCode == http.StatusForbidden && re.Reason != "unsigned":
		re.sentinel = ErrForbidden
	case resp.StatusCode == http.StatusNotImplemented:
		re.sentinel = storage.ErrNotSupported
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusConflict,
		resp.StatusCode == http.StatusRequestEntityTooLarge, resp.StatusCode == http.StatusForbidden,
		resp.StatusCode == http.StatusMethodNotAllowed:
		re.sentinel = ErrRejected
	}
	return &storage.Error{Op: op, Key: key, Err: re}
}

func objectFromHeaders(key string, h http.Header, size int64) storage.Object {
	o := storage.Object{Key: key, Size: size, ETag: h.Get("ETag")}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderMtime)); err == nil {
		o.ModTime = t
	} else if t, err := http.ParseTime(h.Get("Last-Modified")); err == nil {
		o.ModTime = t
	}
	if s, err := strconv.ParseInt(h.Get(HeaderSize), 10, 64); err == nil {
		o.Size = s
	}
	return o
}

type clientReader struct {
	io.ReadCloser
	obj storage.Object
}

func (r *clientReader) Object() storage.Object { return r.obj }

// Get streams key.
func (c *Client) Get(ctx context.Context, key string) (storage.Reader, error) {
	return c.GetRange(ctx, key, 0, -1)
}

// GetRange streams length bytes of key from offset (length < 0: to the end).
func (c *Client) GetRange(ctx context.Context, key string, offset, length int64) (storage.Reader, error) {
	op := "get"
	if err := storage.ValidateKey(key); err != nil {
		return nil, &storage.Error{Op: op, Key: key, Err: err}
	}
	if offset < 0 {
		return nil, &storage.Error{Op: "range", Key: key, Err: fmt.Errorf("negative offset %d", offset)}
	}
	hdr := http.Header{}
	if offset > 0 || length >= 0 {
		op = "range"
		if length == 0 {
			obj, err := c.Stat(ctx, key)
			if err != nil {
				return nil, err
			}
			return &clientReader{ReadCloser: io.NopCloser(strings.NewReader("")), obj: obj}, nil
		}
		if length > 0 {
			hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
		} else {
			hdr.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		}
	}
	resp, err := c.do(ctx, http.MethodGet, c.keyURL(key, false), nil, hdr)
	if err != nil {
		return nil, &storage.Error{Op: op, Key: key, Err: err}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		obj := objectFromHeaders(key, resp.Header, resp.ContentLength)
		body := io.ReadCloser(resp.Body)
		if offset > 0 || length >= 0 {
			// The server ignored the range: skip and cut it here.
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, &storage.Error{Op: op, Key: key, Err: err}
			}
			if length >= 0 {
				body = struct {
					io.Reader
					io.Closer
				}{io.LimitReader(resp.Body, length), resp.Body}
			}
		}
		return &clientReader{ReadCloser: body, obj: obj}, nil
	case http.StatusPartialContent:
		obj := objectFromHeaders(key, resp.Header, -1)
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			if i := strings.LastIndexByte(cr, '/'); i >= 0 {
				if n, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil {
					obj.Size = n
				}
			}
		}
		return &clientReader{ReadCloser: resp.Body, obj: obj}, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		obj, err := c.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if offset >= obj.Size {
			return &clientReader{ReadCloser: io.NopCloser(strings.NewReader("")), obj: obj}, nil
		}
		return nil, &storage.Error{Op: op, Key: key, Err: fmt.Errorf("range %d+%d not satisfiable", offset, length)}
	}
	return nil, remoteError(op, key, resp)
}

// Stat is a HEAD request.
func (c *Client) Stat(ctx context.Context, key string) (storage.Object, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.Object{}, &storage.Error{Op: "stat", Key: key, Err: err}
	}
	resp, err := c.do(ctx, http.MethodHead, c.keyURL(key, false), nil, nil)
	if err != nil {
		return storage.Object{}, &storage.Error{Op: "stat", Key: key, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return storage.Object{}, remoteError("stat", key, resp)
	}
	resp.Body.Close()
	return objectFromHeaders(key, resp.Header, resp.ContentLength), nil
}

// Put uploads r (streamed) to key.
func (c *Client) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Object, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.Object{}, &storage.Error{Op: "put", Key: key, Err: err}
	}
	if opts.IfNotExist && opts.IfMatch != "" {
		return storage.Object{}, &storage.Error{Op: "put", Key: key, Err: errors.New("IfNotExist and IfMatch are exclusive")}
	}
	hdr := http.Header{}
	if opts.IfNotExist {
		hdr.Set("If-None-Match", "*")
	}
	if opts.IfMatch != "" {
		hdr.Set("If-Match", ETag(opts.IfMatch))
	}
	if opts.ContentType != "" {
		hdr.Set("Content-Type", opts.ContentType)
	}
	resp, err := c.do(ctx, http.MethodPut, c.keyURL(key, false), r, hdr)
	if err != nil {
		return storage.Object{}, &storage.Error{Op: "put", Key: key, Err: err}
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return storage.Object{}, remoteError("put", key, resp)
	}
	resp.Body.Close()
	return objectFromHeaders(key, resp.Header, -1), nil
}

// Delete removes key (markers and leases only: the gateway refuses the rest).
func (c *Client) Delete(ctx context.Context, key string, opts storage.DeleteOptions) error {
	if err := storage.ValidateKey(key); err != nil {
		return &storage.Error{Op: "delete", Key: key, Err: err}
	}
	hdr := http.Header{}
	if opts.IfMatch != "" {
		hdr.Set("If-Match", ETag(opts.IfMatch))
	}
	resp, err := c.do(ctx, http.MethodDelete, c.keyURL(key, false), nil, hdr)
	if err != nil {
		return &storage.Error{Op: "delete", Key: key, Err: err}
	}
	switch {
	case resp.StatusCode/100 == 2:
		resp.Body.Close()
		return nil
	case resp.StatusCode == http.StatusNotFound && opts.IfMatch == "":
		resp.Body.Close()
		return nil
	}
	return remoteError("delete", key, resp)
}

// DeleteMany deletes one key at a time.
func (c *Client) DeleteMany(ctx context.Context, keys []string) error {
	var errs []error
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := c.Delete(ctx, k, storage.DeleteOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List streams the JSON-lines listing of prefix. A listing without the
// gateway's end trailer is an error, never a short result.
func (c *Client) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		if err := storage.ValidatePrefix(prefix); err != nil {
			yield(storage.Object{}, &storage.Error{Op: "list", Key: prefix, Err: err})
			return
		}
		u := c.keyURL(prefix, true)
		if prefix == "" {
			u = c.base.String() + "/?list=1"
		}
		resp, err := c.do(ctx, http.MethodGet, u, nil, nil)
		if err != nil {
			yield(storage.Object{}, &storage.Error{Op: "list", Key: prefix, Err: err})
			return
		}
		if resp.StatusCode != http.StatusOK {
			yield(storage.Object{}, remoteError("list", prefix, resp))
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e struct {
				ListEntry
				ListTrailer
			}
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				yield(storage.Object{}, &storage.Error{Op: "list", Key: prefix, Err: fmt.Errorf("bad listing line: %w", err)})
				return
			}
			if e.Key == "" {
				if !e.End {
					msg := e.Error
					if msg == "" {
						msg = "listing ended without completing"
					}
					yield(storage.Object{}, &storage.Error{Op: "list", Key: prefix, Err: errors.New("gateway: " + msg)})
				}
				return
			}
			if !yield(storage.Object{Key: e.Key, Size: e.Size, ModTime: e.MTime, ETag: e.ETag}, nil) {
				return
			}
		}
		err = sc.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		yield(storage.Object{}, &storage.Error{Op: "list", Key: prefix, Err: fmt.Errorf("listing cut short: %w", err)})
	}
}

func (c *Client) info(ctx context.Context) (Info, time.Time, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base.String()+"/?kiss=info", nil, nil)
	if err != nil {
		return Info{}, time.Time{}, &storage.Error{Op: "info", Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return Info{}, time.Time{}, remoteError("info", "", resp)
	}
	defer resp.Body.Close()
	var in Info
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&in); err != nil {
		return Info{}, time.Time{}, &storage.Error{Op: "info", Err: fmt.Errorf("bad gateway info: %w", err)}
	}
	now := in.Now
	if now.IsZero() {
		now, _ = http.ParseTime(resp.Header.Get("Date"))
	}
	c.mu.Lock()
	caps := in.Capabilities
	caps.Local = false
	caps.MaxBatchDelete = 0
	c.caps = &caps
	c.mu.Unlock()
	return in, now, nil
}

// Now is the gateway's store clock (falling back to the Date header).
func (c *Client) Now(ctx context.Context) (time.Time, error) {
	_, now, err := c.info(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if now.IsZero() {
		return time.Time{}, &storage.Error{Op: "now", Err: errors.New("gateway sent no time")}
	}
	return now, nil
}

// Capabilities are those of the store behind the gateway, fetched once
// (10 s at most). If the gateway cannot be asked, none are claimed, so the
// lock protocol refuses to run rather than trust an unknown store.
func (c *Client) Capabilities() storage.Capabilities {
	c.mu.Lock()
	caps := c.caps
	c.mu.Unlock()
	if caps != nil {
		return *caps
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := c.info(ctx); err != nil {
		return storage.Capabilities{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.caps
}
