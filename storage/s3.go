package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
	"golang.org/x/sync/errgroup"
)

// MaxConditionalBody bounds the body of a conditional Put on S3. Conditional
// bodies are buffered so that an ambiguous 412 (our own retried write already
// landed) can be resolved by comparing bytes; leases and markers are tiny.
const MaxConditionalBody = 1 << 20

// s3MaxBatchDelete is S3's limit of keys per DeleteObjects request.
const s3MaxBatchDelete = 1000

// s3DeleteParallel is how many DeleteObjects requests run at once.
const s3DeleteParallel = 4

// s3AbortTimeout bounds the AbortMultipartUpload of a failed upload.
const s3AbortTimeout = 30 * time.Second

// s3ResponseHeaderTimeout bounds the wait for a response's headers once a
// request is sent. Without it a server that accepts a request and never
// answers held a prune for ever, its lease refreshed all the while, so
// every writer waited too. S3 answers within seconds (a 1000-key
// DeleteObjects included) and starts the answer of a long
// CompleteMultipartUpload at once; a timed-out request is retried by the
// SDK and then fails as transient. A var so tests can shorten it.
var s3ResponseHeaderTimeout = 2 * time.Minute

// s3MaxIdleConns is how many idle connections to the S3 endpoint the store
// keeps for reuse.
const s3MaxIdleConns = 128

// s3ClockCache is how long a measured store-clock offset is reused by Now.
const s3ClockCache = 30 * time.Second

// nixStoreParams are parameters of a Nix s3:// store URL that say nothing
// about where the bucket is; kiss accepts them so the URL given to
// `nix copy --to` can be given to kiss unchanged.
var nixStoreParams = map[string]bool{
	"compression": true, "compression-level": true, "parallel-compression": true,
	"secret-key": true, "write-nar-listing": true, "index-debug-info": true,
	"multipart-upload": true, "buffer-size": true, "narinfo-compression": true,
	"ls-compression": true, "log-compression": true, "want-mass-query": true,
	"priority": true, "trusted": true, "local-nar-cache": true, "path-info-cache-size": true,
}

// s3Store is the s3:// driver: gocloud's s3blob for listing and (multipart,
// streaming) uploads, and the raw SDK client for reads and stats (the
// per-request path of a gateway, see open) and for what gocloud does not
// offer (batched and conditional deletes, the bucket's clock).
type s3Store struct {
	bucket  *blob.Bucket
	client  *s3.Client
	presign *s3.PresignClient
	// urls is made on the first PresignGet (only a redirecting gateway
	// presigns); nil: presign through the SDK's presign client.
	urls       func() *urlSigner
	name       string
	displayURL string
	caps       Capabilities
	reqs       *requestCounter
	checksum   aws.RequestChecksumCalculation

	clockMu  sync.Mutex
	offset   time.Duration // store clock minus local clock
	offsetAt time.Time     // local time the offset was measured (zero: never)
	// headDenied: a HeadBucket was answered 403 (Open then checks the
	// credentials: checkCredentials).
	headDenied bool
}

var (
	_ Store     = (*s3Store)(nil)
	_ Presigner = (*s3Store)(nil)
)

// s3Config is an s3:// URL taken apart.
type s3Config struct {
	bucket            string
	gocloudParams     url.Values // handed to gocloud.dev/aws
	usePathStyle      *bool
	disableHTTPS      bool
	accelerate        bool
	sseType           s3types.ServerSideEncryption
	kmsKeyID          string
	conditionalDelete bool
}

func parseS3URL(u *url.URL) (*s3Config, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: s3://%s: %s", ErrInvalidURL, u.Host, fmt.Sprintf(format, a...))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: %q: an s3:// URL needs a bucket name (s3://BUCKET?region=…)", ErrInvalidURL, u.Redacted())
	}
	if u.User != nil {
		return nil, bad("credentials in the URL are not supported; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, bad("a path (%q) is not supported: the cache is the whole bucket", u.Path)
	}
	c := &s3Config{bucket: u.Host, conditionalDelete: true, gocloudParams: url.Values{}}
	q := u.Query()
	parseBool := func(k, v string) (bool, error) {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, bad("parameter %s=%q is not a boolean", k, v)
		}
		return b, nil
	}
	scheme := ""
	for k, vs := range q {
		if len(vs) != 1 {
			return nil, bad("parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		var err error
		switch k {
		case "conditional_delete", "conditional-delete":
			c.conditionalDelete, err = parseBool(k, v)
		case "scheme": // Nix: scheme of the endpoint
			if v != "http" && v != "https" {
				return nil, bad("scheme=%q: want http or https", v)
			}
			scheme = v
		case "addressing-style": // Nix
			switch v {
			case "path":
				c.usePathStyle = aws.Bool(true)
			case "virtual":
				c.usePathStyle = aws.Bool(false)
			case "auto":
			default:
				return nil, bad("addressing-style=%q: want path, virtual or auto", v)
			}
		case "use_path_style", "s3ForcePathStyle":
			var b bool
			b, err = parseBool(k, v)
			c.usePathStyle = &b
		case "disable_https":
			c.disableHTTPS, err = parseBool(k, v)
		case "accelerate":
			c.accelerate, err = parseBool(k, v)
		case "ssetype":
			for _, t := range s3types.ServerSideEncryptionAes256.Values() {
				if strings.EqualFold(string(t), v) {
					c.sseType = t
				}
			}
			if c.sseType == "" {
				return nil, bad("ssetype=%q: want one of %v", v, s3types.ServerSideEncryptionAes256.Values())
			}
		case "kmskeyid":
			c.kmsKeyID = v
		case "region", "endpoint", "profile", "hostname_immutable", "dualstack", "fips",
			"rate_limiter_capacity", "anonymous", "role",
			"request_checksum_calculation", "response_checksum_validation":
			c.gocloudParams.Set(k, v)
		default:
			if nixStoreParams[k] {
				continue // Nix's own store settings: not ours
			}
			return nil, bad("unknown parameter %q (known: region, endpoint, profile, scheme, addressing-style, use_path_style, disable_https, conditional_delete, request_checksum_calculation, response_checksum_validation, …)", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if ep := c.gocloudParams.Get("endpoint"); ep != "" {
		if !strings.Contains(ep, "://") { // Nix spelling: host:port plus scheme=
			if scheme == "" {
				scheme = "https"
			}
			ep = scheme + "://" + ep
		} else if scheme != "" && !strings.HasPrefix(ep, scheme+"://") {
			return nil, bad("endpoint %q contradicts scheme=%s", ep, scheme)
		}
		pu, err := url.Parse(ep)
		if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return nil, bad("endpoint %q is not an http(s) URL or host:port", c.gocloudParams.Get("endpoint"))
		}
		c.gocloudParams.Set("endpoint", ep)
		if c.usePathStyle == nil {
			// Like Nix: a custom endpoint (MinIO, versitygw, Ceph…) is
			// addressed by path unless told otherwise.
			c.usePathStyle = aws.Bool(true)
		}
	} else if scheme == "http" {
		c.disableHTTPS = true
	}
	// Third-party stores reject the SDK's default trailing checksums.
	for _, k := range []string{"request_checksum_calculation", "response_checksum_validation"} {
		if c.gocloudParams.Get(k) == "" {
			c.gocloudParams.Set(k, "when_required")
		}
	}
	return c, nil
}

// openS3 opens s3://BUCKET[?params]. Parameters:
//
//	region, endpoint, profile, anonymous, role, hostname_immutable,
//	dualstack, fips, rate_limiter_capacity,
//	request_checksum_calculation, response_checksum_validation
//	                          gocloud.dev/aws's own (the two checksum
//	                          settings default to when_required, which
//	                          third-party servers need)
//	use_path_style, s3ForcePathStyle, disable_https, accelerate, ssetype, kmskeyid
//	                          as in gocloud's s3blob
//	endpoint=host:port&scheme=http, addressing-style=path|virtual|auto
//	                          Nix's spellings; a custom endpoint means path
//	                          style unless told otherwise (as in Nix)
//	conditional_delete=false  the server ignores If-Match on DELETE (MinIO,
//	                          gofakes3): use read-compare-delete instead
//	compression, secret-key, write-nar-listing, …
//	                          Nix store settings: accepted and ignored, so
//	                          the URL given to nix copy works unchanged
//
// Credentials come from the AWS chain (AWS_ACCESS_KEY_ID…, profiles,
// instance roles), never from the URL. Open sends one HeadBucket, so a
// missing bucket or a wrong endpoint fails here and not later.
func openS3(ctx context.Context, u *url.URL) (Store, error) {
	c, err := parseS3URL(u)
	if err != nil {
		return nil, err
	}
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, c.gocloudParams)
	if err != nil {
		return nil, fmt.Errorf("%w: s3://%s: %v", ErrInvalidURL, c.bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // what Nix and most S3-compatible servers assume
	}
	if hc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		// The SDK keeps 10 idle connections per host: a gateway with more
		// concurrent downloads than that would close the surplus after
		// each burst and dial again (TestS3KeepsConcurrentConnections).
		// Adding to the SDK's client keeps what the config set up (a
		// custom CA bundle, say).
		cfg.HTTPClient = hc.WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost = s3MaxIdleConns
			tr.MaxIdleConns = max(tr.MaxIdleConns, s3MaxIdleConns)
			tr.ResponseHeaderTimeout = s3ResponseHeaderTimeout
		})
	}
	reqs := newRequestCounter()
	cfg.APIOptions = append(cfg.APIOptions, reqs.install)
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UseAccelerate = c.accelerate
		o.EndpointOptions.DisableHTTPS = c.disableHTTPS
		if c.usePathStyle != nil {
			o.UsePathStyle = *c.usePathStyle
		}
	})
	bucket, err := s3blob.OpenBucket(ctx, client, c.bucket, &s3blob.Options{
		EncryptionType:             c.sseType,
		KMSEncryptionID:            c.kmsKeyID,
		RequestChecksumCalculation: cfg.RequestChecksumCalculation,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: s3://%s: %v", ErrInvalidURL, c.bucket, err)
	}
	display := *u
	display.User = nil
	s := &s3Store{
		bucket:     bucket,
		client:     client,
		presign:    s3.NewPresignClient(client),
		name:       c.bucket,
		displayURL: display.String(),
		reqs:       reqs,
		checksum:   cfg.RequestChecksumCalculation,
		caps: Capabilities{
			AtomicCreate:      true,
			CompareAndSwap:    true,
			ConditionalDelete: c.conditionalDelete,
			MaxBatchDelete:    s3MaxBatchDelete,
			DeleteParallel:    s3DeleteParallel,
		},
	}
	s.urls = sync.OnceValue(func() *urlSigner {
		return newURLSigner(context.Background(), s.presign, client.Options(), c.bucket)
	})
	// One request up front: a missing bucket is a configuration error that
	// must not surface later as "object not found" (which a pruner could
	// read as "nothing there"). It also primes the clock offset.
	if _, err := s.Now(ctx); err != nil {
		_ = bucket.Close()
		return nil, err
	}
	if s.headDenied {
		if err := s.checkCredentials(ctx); err != nil {
			_ = bucket.Close()
			return nil, err
		}
	}
	return s, nil
}

// rejectedCredentials are the error codes of S3 (and the servers that
// follow it) for keys it does not accept at all, as against a policy that
// denies an accepted identity (AccessDenied).
var rejectedCredentials = map[string]bool{
	"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "InvalidToken": true,
	"ExpiredToken": true, "TokenRefreshRequired": true, "InvalidSecurity": true,
}

// checkCredentials tells keys the server rejects from a role that may not
// HeadBucket, both of which get a bare 403 to the HeadBucket of Open (a
// HEAD has no body, so no error code): one ranged GET of nix-cache-info
// answers with a code. Only rejected keys fail; a denial, a missing object
// or any other answer leaves the commands to meet it on their own reads.
func (s *s3Store) checkCredentials(ctx context.Context) error {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.name), Key: aws.String("nix-cache-info"), Range: aws.String("bytes=0-0")})
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(out.Body, 2))
		out.Body.Close()
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && rejectedCredentials[ae.ErrorCode()] {
		return wrap("open", "", fmt.Errorf("%w: %s rejects these credentials (%s; see AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE): %w", ErrAccessDenied, s.displayURL, ae.ErrorCode(), err))
	}
	return nil
}

func (s *s3Store) Capabilities() Capabilities { return s.caps }
func (s *s3Store) URL() string                { return s.displayURL }
func (s *s3Store) Close() error               { return s.bucket.Close() }

// Requests returns how many HTTP requests (attempts, retries included) this
// store sent, by S3 operation name. Counting merges it into its report.
func (s *s3Store) Requests() map[string]int64 { return s.reqs.snapshot() }

// mapS3Err turns SDK and gocloud errors into the storage sentinels, keeping
// the original error in the chain for messages.
func mapS3Err(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("bucket does not exist: %w", err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", ErrPreconditionFailed, err)
	case code == "ConditionalRequestConflict" || status == http.StatusConflict:
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case code == "AccessDenied" || code == "Forbidden" || status == http.StatusForbidden:
		return fmt.Errorf("%w: %w", ErrAccessDenied, err)
	}
	if status >= 500 || code == "SlowDown" || code == "RequestTimeout" || code == "InternalError" {
		// The SDK already retried these; they may still pass later.
		return &s3TransientError{err}
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case gcerrors.FailedPrecondition:
		return fmt.Errorf("%w: %w", ErrPreconditionFailed, err)
	}
	return err
}

// deniedRead explains a 403 on a GET or HEAD, which S3 also gives for a
// missing key when the credentials lack s3:ListBucket: the read fails with
// ErrAccessDenied, never a silent "not found".
func deniedRead(err error) error {
	if !errors.Is(err, ErrAccessDenied) {
		return err
	}
	return fmt.Errorf("%w (the credentials may not read this key, or it does not exist and they lack s3:ListBucket on the bucket, for which S3 answers 403 instead of 404)", err)
}

// s3TransientError marks server-side failures (5xx, throttling) that the
// SDK's own retries did not overcome, so IsTransient lets callers back off.
type s3TransientError struct{ err error }

func (e *s3TransientError) Error() string   { return e.err.Error() }
func (e *s3TransientError) Unwrap() error   { return e.err }
func (e *s3TransientError) Transient() bool { return true }

// The read path (Get, GetRange, Stat) calls the SDK directly rather than
// through gocloud's blob.Bucket, which costs a tracing span, a finalizer, a
// runtime.Caller and a copy of the response per call: measurable on every
// narinfo a gateway serves (BenchmarkS3Read). Keys are escaped as s3blob
// escapes them (s3Key), so these calls see exactly what Put and List see.

func (s *s3Store) Get(ctx context.Context, key string) (Reader, error) {
	return s.open(ctx, "get", key, 0, -1)
}

func (s *s3Store) GetRange(ctx context.Context, key string, offset, length int64) (Reader, error) {
	if offset < 0 {
		return nil, wrap("range", key, fmt.Errorf("negative offset %d", offset))
	}
	return s.open(ctx, "range", key, offset, length)
}

func (s *s3Store) open(ctx context.Context, op, key string, offset, length int64) (Reader, error) {
	if err := ValidateKey(key); err != nil {
		return nil, wrap(op, key, err)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.name), Key: aws.String(s3Key(key))}
	switch {
	case length == 0:
		// S3 has no empty range: ask for one byte and drop it, so that
		// a missing key is still ErrNotFound and Size is still known.
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset, 10))
	case length > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+length-1, 10))
	case offset > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-")
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, wrap(op, key, deniedRead(mapS3Err(err)))
	}
	obj := Object{
		Key:     key,
		Size:    objectSize(aws.ToInt64(out.ContentLength), aws.ToString(out.ContentRange)),
		ModTime: aws.ToTime(out.LastModified),
		ETag:    aws.ToString(out.ETag),
	}
	body := out.Body
	if length == 0 {
		// Read the byte out so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(body, 2))
		body.Close()
		body = http.NoBody
	}
	return &s3Reader{body: body, obj: obj, op: op}, nil
}

// objectSize is the whole object's size from a GET response: Content-Length,
// unless the response is a range, whose Content-Range ("bytes 10-14/27")
// names the total.
func objectSize(contentLength int64, contentRange string) int64 {
	if i := strings.LastIndexByte(contentRange, '/'); i >= 0 {
		if n, err := strconv.ParseInt(contentRange[i+1:], 10, 64); err == nil {
			return n
		}
	}
	return contentLength
}

// s3Reader is a GetObject response body.
type s3Reader struct {
	body io.ReadCloser
	obj  Object
	op   string
}

func (r *s3Reader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if err != nil && err != io.EOF {
		err = wrap(r.op, r.obj.Key, mapS3Err(err))
	}
	return n, err
}

func (r *s3Reader) Close() error   { return r.body.Close() }
func (r *s3Reader) Object() Object { return r.obj }

func (s *s3Store) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return Object{}, wrap("stat", key, err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.name), Key: aws.String(s3Key(key))})
	if err != nil {
		return Object{}, wrap("stat", key, deniedRead(mapS3Err(err)))
	}
	return Object{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		ETag:    aws.ToString(out.ETag),
	}, nil
}

// PresignGet signs a GetObject of key for ttl (SigV4 query signing, no
// request is made). The URL names the endpoint kiss itself uses, so clients
// must be able to reach it.
func (s *s3Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", wrap("presign", key, err)
	}
	if us := s.urls(); us != nil {
		u, err := us.presignGet(ctx, s3Key(key), ttl)
		if err != nil {
			return "", wrap("presign", key, err)
		}
		return u, nil
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.name), Key: aws.String(s3Key(key))}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", wrap("presign", key, err)
	}
	return req.URL, nil
}

// s3Key is the S3 object name of a (valid) key as gocloud's s3blob writes
// and lists it: a "/" that follows ".." and the "_" that starts anything
// of the form "__0x<hex>__" are written as "__0x2f__" and "__0x5f__"
// (s3blob also escapes control characters, which valid keys never hold).
// Nix and kiss keys need none of this, so the common case costs two scans.
func s3Key(key string) string {
	if !strings.Contains(key, "../") && !strings.Contains(key, "__0x") {
		return key
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if (c == '/' && i >= 2 && key[i-2:i] == "..") || (c == '_' && looksEscaped(key[i:])) {
			b.WriteString("__0x")
			b.WriteString(strconv.FormatUint(uint64(c), 16))
			b.WriteString("__")
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// looksEscaped reports whether s starts with what s3blob would unescape:
// "__0x", digits that parse as a base-16 int32 (a sign is allowed), "__".
func looksEscaped(s string) bool {
	rest, ok := strings.CutPrefix(s, "__0x")
	if !ok {
		return false
	}
	end := strings.IndexByte(rest, '_')
	if end < 0 || !strings.HasPrefix(rest[end:], "__") {
		return false
	}
	_, err := strconv.ParseInt(rest[:end], 16, 32)
	return err == nil
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return Object{}, wrap("put", key, err)
	}
	if opts.IfNotExist && opts.IfMatch != "" {
		return Object{}, wrap("put", key, errors.New("IfNotExist and IfMatch are exclusive"))
	}
	// The caller names the content type (nixcache.ContentType for cache
	// objects); the driver guesses none.
	ct := opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	ifMatch := opts.IfMatch
	wo := &blob.WriterOptions{ContentType: ct, BeforeWrite: func(as func(any) bool) error {
		// gocloud builds a transfer manager per upload whose FailTimeout
		// is 0, so after a cancelled ctx the AbortMultipartUpload runs on
		// that same cancelled ctx and fails, leaving the parts behind
		// (billed, invisible). Rebuild it with the same settings plus a
		// FailTimeout, which makes it abort on a fresh context.
		var tm *transfermanager.Client
		if !as(&tm) {
			return errors.New("s3blob no longer exposes *transfermanager.Client (gocloud.dev upgrade?)")
		}
		*tm = *transfermanager.New(s.client, func(o *transfermanager.Options) {
			o.RequestChecksumCalculation = s.checksum
			o.FailTimeout = s3AbortTimeout
		})
		if ifMatch == "" {
			return nil
		}
		var in *transfermanager.UploadObjectInput
		if !as(&in) {
			return errors.New("s3blob no longer exposes *transfermanager.UploadObjectInput: If-Match cannot be set")
		}
		in.IfMatch = aws.String(ifMatch)
		return nil
	}}
	rec := &callRecord{}
	rctx := withCallRecord(ctx, rec)

	if !opts.IfNotExist && opts.IfMatch == "" {
		cr := &countReader{r: r}
		if err := s.bucket.Upload(rctx, key, cr, wo); err != nil {
			return Object{}, wrap("put", key, mapS3Err(err))
		}
		return s.written(ctx, key, cr.n, rec)
	}

	body, err := io.ReadAll(io.LimitReader(r, MaxConditionalBody+1))
	if err != nil {
		return Object{}, wrap("put", key, fmt.Errorf("reading body: %w", err))
	}
	if len(body) > MaxConditionalBody {
		return Object{}, wrap("put", key, fmt.Errorf("%w: conditional put bodies are limited to %d bytes on s3://", ErrNotSupported, MaxConditionalBody))
	}
	wo.IfNotExist = opts.IfNotExist
	err = s.bucket.Upload(rctx, key, bytes.NewReader(body), wo)
	if err != nil {
		err = mapS3Err(err)
		if errors.Is(err, ErrPreconditionFailed) && rec.attempts.Load() > 1 {
			// The SDK retried: maybe the first attempt landed and the retry
			// lost against it. Identical bytes (bodies carry a nonce) mean
			// the write is ours.
			if obj, ok := s.landed(ctx, key, body); ok {
				return obj, nil
			}
		}
		return Object{}, wrap("put", key, err)
	}
	return s.written(ctx, key, int64(len(body)), rec)
}

// written describes the object a successful Put created. The ETag comes
// from the PUT (or CompleteMultipartUpload) response itself, never from a
// later HEAD, which could already see someone else's version.
func (s *s3Store) written(ctx context.Context, key string, size int64, rec *callRecord) (Object, error) {
	etag, date := rec.result()
	if etag == "" {
		// A store that sends no ETag on PUT: the best we can do.
		return s.Stat(ctx, key)
	}
	if date.IsZero() {
		date, _ = s.Now(ctx)
	}
	return Object{Key: key, Size: size, ModTime: date, ETag: etag}, nil
}

// landed reports whether key now holds exactly body.
func (s *s3Store) landed(ctx context.Context, key string, body []byte) (Object, bool) {
	r, err := s.Get(ctx, key)
	if err != nil {
		return Object{}, false
	}
	defer r.Close()
	got, err := io.ReadAll(io.LimitReader(r, int64(len(body))+1))
	if err != nil || !bytes.Equal(got, body) {
		return Object{}, false
	}
	return r.Object(), true
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (s *s3Store) Delete(ctx context.Context, key string, opts DeleteOptions) error {
	if err := ValidateKey(key); err != nil {
		return wrap("delete", key, err)
	}
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.name), Key: aws.String(s3Key(key))}
	if opts.IfMatch != "" {
		// S3 answers 204 for an absent key even with If-Match on some
		// servers; look first so a missing key is always ErrNotFound.
		cur, err := s.Stat(ctx, key)
		if err != nil {
			return wrap("delete", key, err)
		}
		if cur.ETag != opts.IfMatch {
			return wrap("delete", key, fmt.Errorf("%w: etag is %s, not %s", ErrPreconditionFailed, cur.ETag, opts.IfMatch))
		}
		if s.caps.ConditionalDelete {
			in.IfMatch = aws.String(opts.IfMatch)
		}
		// Without ConditionalDelete this is read-compare-delete (see Capabilities).
	}
	_, err := s.client.DeleteObject(ctx, in)
	err = mapS3Err(err)
	if errors.Is(err, ErrNotFound) && opts.IfMatch == "" {
		return nil
	}
	return wrap("delete", key, err)
}

func (s *s3Store) DeleteMany(ctx context.Context, keys []string) error {
	var (
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	valid := make([]string, 0, len(keys))
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			fail(wrap("delete", k, err))
			continue
		}
		valid = append(valid, k)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s3DeleteParallel)
	for start := 0; start < len(valid); start += s3MaxBatchDelete {
		batch := valid[start:min(start+s3MaxBatchDelete, len(valid))]
		g.Go(func() error {
			ids := make([]s3types.ObjectIdentifier, len(batch))
			for i, k := range batch {
				ids[i] = s3types.ObjectIdentifier{Key: aws.String(s3Key(k))}
			}
			out, err := s.client.DeleteObjects(gctx, &s3.DeleteObjectsInput{
				Bucket: aws.String(s.name),
				Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)},
			})
			if err != nil {
				fail(wrap("delete-many", batch[0], fmt.Errorf("batch of %d keys: %w", len(batch), mapS3Err(err))))
				return nil // other batches still run; the error is reported
			}
			for _, e := range out.Errors {
				if aws.ToString(e.Code) == "NoSuchKey" {
					continue
				}
				fail(wrap("delete", aws.ToString(e.Key), fmt.Errorf("%s: %s", aws.ToString(e.Code), aws.ToString(e.Message))))
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil && len(errs) > 0 {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *s3Store) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(Object{}, wrap("list", prefix, err))
			return
		}
		it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
		for {
			lo, err := it.Next(ctx)
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(Object{}, wrap("list", prefix, mapS3Err(err)))
				return
			}
			if lo.IsDir {
				continue
			}
			obj := Object{Key: lo.Key, Size: lo.Size, ModTime: lo.ModTime}
			var so s3types.Object
			if lo.As(&so) {
				obj.ETag = aws.ToString(so.ETag)
			}
			if !yield(obj, nil) {
				return
			}
		}
	}
}

// Now returns the bucket's clock: the Date header of a HeadBucket response
// (an error response carries one too), as an offset to the local clock that
// is reused for s3ClockCache.
func (s *s3Store) Now(ctx context.Context) (time.Time, error) {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	if !s.offsetAt.IsZero() && time.Since(s.offsetAt) < s3ClockCache {
		return time.Now().Add(s.offset).Round(0), nil
	}
	rec := &callRecord{}
	start := time.Now()
	_, err := s.client.HeadBucket(withCallRecord(ctx, rec), &s3.HeadBucketInput{Bucket: aws.String(s.name)})
	end := time.Now()
	if err != nil {
		mapped := mapS3Err(err)
		var re *awshttp.ResponseError
		switch {
		case errors.Is(mapped, ErrNotFound):
			return time.Time{}, wrap("now", "", fmt.Errorf("bucket %q does not exist at %s: %w", s.name, s.displayURL, err))
		case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusForbidden:
			// Not allowed to HeadBucket, but the denial still carries Date.
			s.headDenied = true
		default:
			return time.Time{}, wrap("now", "", mapped)
		}
	}
	_, date := rec.result()
	if date.IsZero() {
		return time.Time{}, wrap("now", "", errors.New("the store sent no Date header"))
	}
	// Date has whole seconds: the server's clock was somewhere in
	// [date, date+1s) when it answered; take the middle, against the
	// middle of our request.
	mid := start.Add(end.Sub(start) / 2)
	s.offset = date.Add(500 * time.Millisecond).Sub(mid)
	s.offsetAt = end
	return time.Now().Add(s.offset).Round(0), nil
}
