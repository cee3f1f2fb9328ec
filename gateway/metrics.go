package gateway

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are per Server (own registry), so tests and several servers in one
// process never collide on global registration.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytesOut prometheus.Counter
	bytesIn  prometheus.Counter
	latency  *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	upstream *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiss_gateway_requests_total", Help: "HTTP requests by method and status code.",
		}, []string{"method", "code"}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiss_gateway_response_bytes_total", Help: "Response body bytes sent.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiss_gateway_upload_bytes_total", Help: "Request body bytes stored.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kiss_gateway_request_duration_seconds", Help: "Time to serve a request, by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiss_gateway_rejected_writes_total", Help: "Writes refused, by reason.",
		}, []string{"reason"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiss_gateway_upstream_fetches_total", Help: "Local misses fetched from the upstream cache, by result.",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.requests, m.bytesOut, m.bytesIn, m.latency, m.rejected, m.upstream,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) observe(method string, code int, d time.Duration, n int64) {
	m.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
	m.bytesOut.Add(float64(n))
}

// recorder captures status and bytes for the access log and metrics. It
// keeps io.ReaderFrom so that net/http can still use sendfile(2) for files.
type recorder struct {
	http.ResponseWriter
	code int
	n    int64
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.n += int64(n)
	return n, err
}

// ReadFrom forwards to the connection's ReaderFrom (sendfile/splice).
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines, flush).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
