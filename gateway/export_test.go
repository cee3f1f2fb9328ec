package gateway

import (
	"context"

	"github.com/valyala/fasthttp"
)

// HandlerForBenchmark exposes the request handler to benchmarks.
func HandlerForBenchmark(s *Server) fasthttp.RequestHandler { return s.handler(context.Background()) }
