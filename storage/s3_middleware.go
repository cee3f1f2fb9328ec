package storage

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// callRecord collects, for one logical call, what the SDK hides behind
// gocloud: how many HTTP attempts were made (a retried conditional PUT is
// ambiguous), the ETag the store gave our upload, and the response Date.
type callRecord struct {
	attempts atomic.Int32

	mu   sync.Mutex
	etag string
	date time.Time
}

func (r *callRecord) result() (string, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.etag, r.date
}

type callRecordKey struct{}

func withCallRecord(ctx context.Context, r *callRecord) context.Context {
	return context.WithValue(ctx, callRecordKey{}, r)
}

func callRecordFrom(ctx context.Context) *callRecord {
	r, _ := ctx.Value(callRecordKey{}).(*callRecord)
	return r
}

// requestCounter counts HTTP attempts by S3 operation name.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int64
}

func newRequestCounter() *requestCounter { return &requestCounter{n: map[string]int64{}} }

func (c *requestCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// install adds the two middlewares to every S3 operation's stack.
func (c *requestCounter) install(stack *middleware.Stack) error {
	attempt := middleware.FinalizeMiddlewareFunc("kissAttempt",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			c.mu.Lock()
			c.n[middleware.GetOperationName(ctx)]++
			c.mu.Unlock()
			if r := callRecordFrom(ctx); r != nil {
				r.attempts.Add(1)
			}
			return next.HandleFinalize(ctx, in)
		})
	// After the retry middleware, so it runs once per attempt.
	if err := stack.Finalize.Insert(attempt, "Retry", middleware.After); err != nil {
		if err := stack.Finalize.Add(attempt, middleware.After); err != nil {
			return err
		}
	}
	result := middleware.InitializeMiddlewareFunc("kissResult",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			r := callRecordFrom(ctx)
			if r == nil {
				return out, md, err
			}
			var date string
			if raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && raw != nil {
				date = raw.Header.Get("Date")
			}
			var re *awshttp.ResponseError
			if date == "" && err != nil && errors.As(err, &re) && re.Response != nil {
				date = re.Response.Header.Get("Date")
			}
			var etag string
			switch o := out.Result.(type) {
			case *s3.PutObjectOutput:
				etag = aws.ToString(o.ETag)
			case *s3.CompleteMultipartUploadOutput:
				etag = aws.ToString(o.ETag)
			}
			r.mu.Lock()
			if t, perr := http.ParseTime(date); perr == nil {
				r.date = t
			}
			if etag != "" {
				r.etag = etag
			}
			r.mu.Unlock()
			return out, md, err
		})
	return stack.Initialize.Add(result, middleware.After)
}
