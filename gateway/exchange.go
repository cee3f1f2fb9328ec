package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// exchange is one request in flight: the connection's request and
// response, the context store calls run under, who asks, and what the access
// log and the metrics need once the response has gone out.
type exchange struct {
	srv *Server
	rc  *fasthttp.RequestCtx
	// ctx is for store calls. It ends when the server's shutdown grace
	// ends, not when fasthttp starts shutting down (fasthttp's own request
	// context is cancelled at the first moment of a shutdown, which would
	// cut downloads a graceful shutdown promises to finish).
	ctx    context.Context
	method string
	path   string // the decoded request path, as the log shows it
	access Access
	start  time.Time
	err    error // why the request failed, for the log
	// streaming: the body is a stream that finishes the log line when
	// fasthttp closes it (after the last byte, or on a broken connection).
	streaming bool
}

// header returns a request header ("" when absent).
func (x *exchange) header(name string) string {
	return string(x.rc.Request.Header.Peek(name))
}

// hasHeader reports whether a request header is present, without copying it.
func (x *exchange) hasHeader(name string) bool {
	return x.rc.Request.Header.Peek(name) != nil
}

// set sets a response header.
func (x *exchange) set(name, value string) { x.rc.Response.Header.Set(name, value) }

// status sets the response status.
func (x *exchange) status(code int) { x.rc.Response.SetStatusCode(code) }

// body answers with b (copied into the response's own buffer). A HEAD
// request gets b's length and no body.
func (x *exchange) body(b []byte) {
	if x.method == fasthttp.MethodHead {
		x.rc.Response.Header.SetContentLength(len(b))
		return
	}
	x.rc.Response.SetBody(b)
}

// stream answers with size bytes (-1: unknown, sent chunked) read from r
// after the handler returns; c is closed when the transfer ends. A HEAD
// request gets the length only, and c is closed at once.
func (x *exchange) stream(r io.Reader, c io.Closer, size int64) {
	if x.method == fasthttp.MethodHead {
		c.Close()
		if size >= 0 {
			x.rc.Response.Header.SetContentLength(int(size))
		}
		return
	}
	x.streaming = true
	tcp, _ := x.rc.Conn().(*net.TCPConn)
	x.rc.Response.SetBodyStream(&sentBody{r: r, c: c, tcp: tcp, done: func(n int64, err error) { x.srv.finish(x, n, err) }}, int(size))
}

// sentBody is a response body stream. It counts what reaches the client,
// copies in large blocks (fasthttp's own copy uses 4 KiB), keeps sendfile(2)
// possible for files (WriteTo hands the *os.File to the connection's
// ReadFrom), and finishes the request's log line and metrics when fasthttp
// closes it.
type sentBody struct {
	r io.Reader
	c io.Closer
	// tcp is the connection when it is a plain TCP socket, which takes a
	// file with sendfile(2); through TLS a file is copied like any stream.
	tcp  *net.TCPConn
	n    int64
	done func(n int64, err error)
	once sync.Once
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

// copyBlock is the block size of response copies that are not sendfile.
const copyBlock = 64 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBlock); return &b }}

// WriteTo copies the body into fasthttp's body writer.
func (b *sentBody) WriteTo(w io.Writer) (int64, error) {
	if f, ok := b.r.(*os.File); ok && b.tcp != nil {
		if rf, ok := w.(io.ReaderFrom); ok {
			// Corked, the headers leave in the file's first segment
			// instead of a small one of their own (nginx's tcp_nopush).
			cork(b.tcp, true)
			n, err := rf.ReadFrom(f)
			cork(b.tcp, false)
			b.n += n
			return n, err
		}
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	// Wrapped, neither side's ReadFrom/WriteTo can choose a smaller buffer.
	n, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{b.r}, *buf)
	b.n += n
	return n, err
}

// CloseWithError is how fasthttp ends the stream, with the error that ended
// the transfer (nil when it completed).
func (b *sentBody) CloseWithError(err error) error {
	cerr := b.c.Close()
	b.once.Do(func() { b.done(b.n, err) })
	return cerr
}

// cork sets TCP_CORK: while it is on, the kernel sends only full segments.
func cork(c *net.TCPConn, on bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	v := 0
	if on {
		v = 1
	}
	_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v) })
}

// finish writes the access log line and the request metrics.
func (s *Server) finish(x *exchange, n int64, err error) {
	if err == nil {
		err = x.err
	}
	code := x.rc.Response.StatusCode()
	d := time.Since(x.start)
	s.m.observe(x.method, code, d, n)
	if !s.log.Enabled(x.ctx, slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", x.method), slog.String("path", x.path), slog.Int("status", code),
		slog.Int64("bytes", n), slog.Duration("duration", d), slog.String("remote", x.rc.RemoteAddr().String()),
		slog.String("subject", x.access.Subject),
	}
	if err != nil && code != fasthttp.StatusNotFound && code != fasthttp.StatusNotModified {
		attrs = append(attrs, slog.Any("err", err))
	}
	s.log.LogAttrs(x.ctx, slog.LevelInfo, "request", attrs...)
}
