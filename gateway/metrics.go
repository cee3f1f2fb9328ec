package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
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
	m.reg.MustRegister(m.collectors()...)
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.bytesOut, m.bytesIn, m.latency, m.rejected, m.upstream,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
}

// DescribeMetrics calls f with the description of every metric kiss serve
// exports on --metrics-listen (docs/grafana-dashboard.json is checked
// against them).
func DescribeMetrics(f func(*prometheus.Desc)) {
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range newMetrics().collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	for d := range ch {
		f(d)
	}
}

// handler is the Prometheus exposition (promhttp, with its content
// negotiation), bridged to fasthttp.
func (m *metrics) handler() fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
}

func (m *metrics) observe(method string, code int, d time.Duration, n int64) {
	m.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
	m.bytesOut.Add(float64(n))
}
