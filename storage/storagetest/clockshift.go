package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// ClockShift makes a FaultProxy play a store whose clock reads By ahead of
// the real one (negative: behind). To a client, that is its own clock
// being off by -By: a store shifted by +3h is a host 3h behind its store.
//
// Every time the store hands out is shifted: the Date and Last-Modified
// response headers, and the time elements of XML bodies (LastModified of
// ListObjectsV2, HeadObject's XML-less answers aside, Initiated of multipart
// listings, RequestTime/ServerTime of errors) — bodies of GetObject
// excepted, which are object contents.
//
// Requests are judged the way S3 judges them: a SigV4 request whose
// X-Amz-Date is more than MaxRequestSkew off the shifted clock is refused
// with 403 RequestTimeTooSkewed (the AWS SDK then corrects its signing
// clock to the store's Date and retries). A request the shifted store
// admits carries a signing time the real server behind the proxy would
// refuse, so the proxy re-signs it (SigV4, the same headers, the payload
// hash of X-Amz-Content-Sha256) with the real time and the credentials
// given here; it refuses, with 501, what it cannot re-sign honestly:
// chunk-signed streaming uploads and presigned (query-signed) URLs. The
// proxy checks the signing time and the access key, not the client's
// signature itself: that is what it replaces.
type ClockShift struct {
	By              time.Duration
	AccessKeyID     string
	SecretAccessKey string
}

// MaxRequestSkew is how far a request's signing time may be from the
// store's clock: S3's 15 minutes.
const MaxRequestSkew = 15 * time.Minute

// ShiftClock sets the store clock's shift (By 0 turns it off). Safe to
// call while requests are in flight; each request sees one setting.
func (p *FaultProxy) ShiftClock(c ClockShift) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.By == 0 {
		p.shift = nil
		return
	}
	p.shift = &c
}

// clockShift returns the current setting, nil when the clock is not shifted.
func (p *FaultProxy) clockShift() *ClockShift {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shift
}

// storeNow is the clock the store the proxy plays reads.
func (p *FaultProxy) storeNow() time.Time {
	if c := p.clockShift(); c != nil {
		return time.Now().Add(c.By)
	}
	return time.Now()
}

const (
	amzDateFormat   = "20060102T150405Z"
	streamingSigned = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
)

// admitShifted judges a request against the shifted store clock; false
// when it answered the request itself.
func (p *FaultProxy) admitShifted(w http.ResponseWriter, r *http.Request, c *ClockShift) bool {
	if r.URL.Query().Has("X-Amz-Signature") {
		p.count("clock-shift-refused")
		p.s3Error(w, http.StatusNotImplemented, "NotImplemented", "the clock-shifting proxy does not re-sign presigned URLs")
		return false
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return true // anonymous: nothing signed, nothing to re-sign
	}
	if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), streamingSigned) {
		p.count("clock-shift-refused")
		p.s3Error(w, http.StatusNotImplemented, "NotImplemented", "the clock-shifting proxy cannot re-sign chunk-signed streaming uploads")
		return false
	}
	key, _, ok := credentialScope(auth)
	if !ok || key != c.AccessKeyID {
		p.count("clock-shift-refused")
		p.s3Error(w, http.StatusForbidden, "InvalidAccessKeyId", fmt.Sprintf("the clock-shifting proxy re-signs only for %q", c.AccessKeyID))
		return false
	}
	signed, err := time.Parse(amzDateFormat, r.Header.Get("X-Amz-Date"))
	if err != nil {
		p.count("clock-shift-refused")
		p.s3Error(w, http.StatusForbidden, "AccessDenied", "no valid X-Amz-Date header")
		return false
	}
	now := p.storeNow()
	if d := signed.Sub(now); d > MaxRequestSkew || d < -MaxRequestSkew {
		p.count("request-time-too-skewed")
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Error><Code>RequestTimeTooSkewed</Code>"+
			"<Message>The difference between the request time and the current time is too large.</Message>"+
			"<RequestTime>%s</RequestTime><ServerTime>%s</ServerTime><MaxAllowedSkewMilliseconds>%d</MaxAllowedSkewMilliseconds></Error>",
			signed.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), MaxRequestSkew.Milliseconds())
		return false
	}
	return true
}

// credentialScope reads the access key and region of a SigV4 Authorization
// header ("AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, …").
func credentialScope(auth string) (key, region string, ok bool) {
	_, rest, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return "", "", false
	}
	cred, _, _ := strings.Cut(rest, ",")
	parts := strings.Split(strings.TrimSpace(cred), "/")
	if len(parts) != 5 {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// resigner is the proxy's transport: a request the shifted store admitted
// is signed again with the real time before it goes to the real server.
type resigner struct {
	p    *FaultProxy
	next http.RoundTripper
}

func (t resigner) RoundTrip(r *http.Request) (*http.Response, error) {
	c := t.p.clockShift()
	auth := r.Header.Get("Authorization")
	if c == nil || auth == "" {
		return t.next.RoundTrip(r)
	}
	_, region, ok := credentialScope(auth)
	if !ok {
		return nil, fmt.Errorf("clock-shifting proxy: unreadable Authorization header")
	}
	out := r.Clone(r.Context())
	hash := out.Header.Get("X-Amz-Content-Sha256")
	if hash == "" {
		return nil, fmt.Errorf("clock-shifting proxy: no X-Amz-Content-Sha256 to re-sign with")
	}
	out.Header.Del("Authorization")
	out.Header.Del("X-Amz-Date")
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}
	err := v4.NewSigner().SignHTTP(context.Background(), creds, out, hash, "s3", region, time.Now().UTC(),
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err != nil {
		return nil, fmt.Errorf("clock-shifting proxy: re-sign: %w", err)
	}
	return t.next.RoundTrip(out)
}

// shiftedXMLTime matches the store's times in S3's XML answers (not
// RequestTime, which echoes the client's).
var shiftedXMLTime = regexp.MustCompile(`<(LastModified|Initiated|ServerTime)>([^<]+)</`)

// shiftResponse moves every time in an answer by the clock shift.
func (p *FaultProxy) shiftResponse(resp *http.Response) error {
	c := p.clockShift()
	if c == nil {
		return nil
	}
	for _, h := range []string{"Date", "Last-Modified"} {
		if v := resp.Header.Get(h); v != "" {
			t, err := http.ParseTime(v)
			if err != nil {
				return fmt.Errorf("clock-shifting proxy: %s header %q: %w", h, v, err)
			}
			resp.Header.Set(h, t.Add(c.By).UTC().Format(http.TimeFormat))
		}
	}
	if resp.Header.Get("Date") == "" {
		resp.Header.Set("Date", p.storeNow().UTC().Format(http.TimeFormat))
	}
	op, _ := S3Op(resp.Request)
	if resp.Request.Method == http.MethodHead || (op == S3GetObject && resp.StatusCode < 300) {
		return nil // no body, or object content: not the store's words
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "xml") || resp.Body == nil {
		return nil
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return fmt.Errorf("clock-shifting proxy: cannot shift the times of a %s-encoded answer", ce)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("clock-shifting proxy: read answer: %w", err)
	}
	var bad error
	body = shiftedXMLTime.ReplaceAllFunc(body, func(m []byte) []byte {
		sub := shiftedXMLTime.FindSubmatch(m)
		v := string(sub[2])
		layout := time.RFC3339
		if strings.Contains(v, ".") {
			layout = "2006-01-02T15:04:05.000Z07:00"
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			layout = amzDateFormat
			t, err = time.Parse(amzDateFormat, v)
		}
		if err != nil {
			bad = fmt.Errorf("clock-shifting proxy: unreadable time in <%s>: %w", sub[1], err)
			return m
		}
		return []byte("<" + string(sub[1]) + ">" + t.Add(c.By).UTC().Format(layout) + "</")
	})
	if bad != nil {
		return bad
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}
