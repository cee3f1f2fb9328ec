package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// faultyS3 is a versitygw bucket behind a fault proxy, opened through the
// real s3:// driver and counted.
func faultyS3(t *testing.T) (*storage.Counting, *storagetest.FaultProxy) {
	b := testenv.VersitygwBucket(t)
	p, u := storagetest.ProxyBucket(t, b.Server.Endpoint, b.URL, 1)
	st, err := storage.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return storage.NewCounting(st), p
}

// lossyPut: the next PUT of key reaches the server, which applies it, and
// the client gets a 500 instead of the answer (the SDK retries it).
func lossyPut(p *storagetest.FaultProxy, key string) {
	p.Inject(storagetest.ProxyFault{Op: storagetest.S3PutObject, KeyPrefix: key, Applied: true, Status: http.StatusInternalServerError})
}

// A conditional create whose first attempt landed but whose answer was lost
// comes back 412 from the retry; the driver reads the object back, finds
// its own bytes, and reports success.
func TestS3AmbiguousConditionalPutResolved(t *testing.T) {
	ctx := context.Background()
	st, p := faultyS3(t)
	lossyPut(p, "gcroots/.lock/prune")
	body := `{"owner":"prune","nonce":"4f1c2a"}`
	obj, err := st.Put(ctx, "gcroots/.lock/prune", strings.NewReader(body), storage.PutOptions{IfNotExist: true})
	if err != nil {
		t.Fatalf("ambiguous create reported %v; the write was ours", err)
	}
	if n := p.RequestsFor(storagetest.S3PutObject, "gcroots/.lock/prune"); n != 2 || st.Counts()["http:PutObject"] != 2 {
		t.Fatalf("want exactly one retried PUT, proxy saw %d, client counted %v", n, st.Counts())
	}
	cur, err := st.Stat(ctx, "gcroots/.lock/prune")
	if err != nil || cur.ETag != obj.ETag {
		t.Fatalf("Put returned ETag %s, store has %s (%v)", obj.ETag, cur.ETag, err)
	}
	// The ETag is good for the next compare-and-swap.
	if _, err := st.Put(ctx, "gcroots/.lock/prune", strings.NewReader(body+" "), storage.PutOptions{IfMatch: obj.ETag}); err != nil {
		t.Fatalf("refresh with the returned ETag: %v", err)
	}

	// Same for If-Match: base, then an ambiguous replace.
	base, err := st.Put(ctx, "lease", strings.NewReader("v1"), storage.PutOptions{IfNotExist: true})
	if err != nil {
		t.Fatal(err)
	}
	lossyPut(p, "lease") // the next PUT of "lease" is the lossy one
	if _, err := st.Put(ctx, "lease", strings.NewReader("v2-mine"), storage.PutOptions{IfMatch: base.ETag}); err != nil {
		t.Fatalf("ambiguous compare-and-swap reported %v; the write was ours", err)
	}
}

// A real loser is still a loser after a retry: the object holds someone
// else's bytes, so the 412 stands.
func TestS3AmbiguousConditionalPutLoserStaysLoser(t *testing.T) {
	ctx := context.Background()
	st, p := faultyS3(t)
	if _, err := st.Put(ctx, "k", strings.NewReader("theirs"), storage.PutOptions{IfNotExist: true}); err != nil {
		t.Fatal(err)
	}
	// The next PUT of k is answered 500 without reaching the server.
	p.Inject(storagetest.ProxyFault{Op: storagetest.S3PutObject, KeyPrefix: "k", Status: http.StatusInternalServerError})
	_, err := st.Put(ctx, "k", strings.NewReader("mine"), storage.PutOptions{IfNotExist: true})
	if !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("retried create on someone else's key: %v, want precondition failed", err)
	}
	if n := p.RequestsFor(storagetest.S3PutObject, "k"); n != 3 {
		t.Fatalf("proxy saw %d PUTs, want 3 (the first, one failed, one retried)", n)
	}
	if c := st.Counts(); c["get"] != 0 || c["http:GetObject"] != 1 {
		t.Fatalf("want exactly one read-back GET, counts %v", c)
	}
}

func TestS3CountsRequests(t *testing.T) {
	ctx := context.Background()
	st, _ := faultyS3(t)
	keys := make([]string, 2500)
	for i := range keys {
		keys[i] = fmt.Sprintf("nar/%04d.nar", i)
	}
	for _, k := range keys[:3] {
		if _, err := st.Put(ctx, k, strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteMany(ctx, keys); err != nil {
		t.Fatal(err)
	}
	c := st.Counts()
	if c["batch-delete"] != 3 || c["http:DeleteObjects"] != 3 || c["delete-many-keys"] != 2500 {
		t.Fatalf("DeleteMany of 2500 keys: counts %v, want 3 batch requests", c)
	}
	n := 0
	for _, err := range st.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 0 || st.Counts()["list"] != 1 || st.Counts()["http:ListObjectsV2"] != 1 {
		t.Fatalf("list: %d objects, counts %v", n, st.Counts())
	}
}

func TestS3MissingBucketIsNotNotFound(t *testing.T) {
	b := testenv.VersitygwBucket(t)
	_, err := storage.Open(context.Background(), "s3://no-such-bucket-kiss?region=us-east-1&endpoint="+url.QueryEscape(b.Server.Endpoint))
	if err == nil || errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("open of a missing bucket: %v", err)
	}
}

// If-Match on S3 is set through gocloud's BeforeWrite hook on a
// *transfermanager.UploadObjectInput — an As target that depends on the
// gocloud.dev version. This fails loudly if a gocloud upgrade breaks it.
func TestS3IfMatchViaBeforeWriteAtPinnedGocloud(t *testing.T) {
	ctx := context.Background()
	st, err := storage.Open(ctx, testenv.Versitygw(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o1, err := st.Put(ctx, "m", strings.NewReader("1"), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "m", strings.NewReader("2"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(ctx, "m", strings.NewReader("3"), storage.PutOptions{IfMatch: o1.ETag})
	if !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("stale If-Match: %v (is If-Match still reaching the request?)", err)
	}
}

// A 5xx that survives the SDK's retries is transient for callers.
func TestS3ServerErrorsAreTransient(t *testing.T) {
	st, err := openFakeS3(t, "b", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			w.WriteHeader(http.StatusOK) // HeadBucket at open
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Stat(context.Background(), "k")
	if err == nil || !storage.IsTransient(err) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("503 on HEAD: %v (transient=%v)", err, storage.IsTransient(err))
	}
}

// A server that takes a request and never answers fails the request
// (transient, after the SDK's retries) instead of holding the caller for
// ever: a prune stuck so kept its lease fresh and every writer waiting.
func TestS3SilentServerTimesOut(t *testing.T) {
	defer storage.SetS3ResponseHeaderTimeout(200 * time.Millisecond)()
	release := make(chan struct{})
	st, err := openFakeS3(t, "b", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			w.WriteHeader(http.StatusOK) // HeadBucket at open
			return
		}
		<-release // never answers while the test runs
	}))
	defer close(release) // before the server's cleanup, which waits for handlers
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := st.Stat(context.Background(), "k.narinfo"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !storage.IsTransient(err) {
			t.Fatalf("HEAD to a silent server: %v (transient=%v), want a transient error", err, storage.IsTransient(err))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("HEAD to a silent server still waiting after 30 s")
	}
}

// A multipart upload cancelled mid-stream is aborted on the server (the
// transfer manager aborts with a fresh context): nothing visible, nothing
// left billing in ListMultipartUploads.
func TestS3CancelledMultipartIsAborted(t *testing.T) {
	b := testenv.VersitygwBucket(t)
	st, err := storage.Open(context.Background(), b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancellingReader{left: 20 << 20, cancel: cancel, ctx: ctx}
	_, err = st.Put(ctx, "nar/big.nar", r, storage.PutOptions{})
	if err == nil {
		t.Fatal("cancelled multipart Put succeeded")
	}
	t.Logf("cancelled Put: %v", err)
	cancel()
	out, err := b.Server.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(b.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left after a cancelled Put", len(out.Uploads))
	}
	if _, err := st.Stat(context.Background(), "nar/big.nar"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat after cancelled Put: %v", err)
	}
}

// cancellingReader yields left zero bytes, then cancels ctx and fails.
type cancellingReader struct {
	left   int
	cancel context.CancelFunc
	ctx    context.Context
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cancel()
		<-c.ctx.Done()
		return 0, c.ctx.Err()
	}
	n := min(len(p), c.left)
	clear(p[:n])
	c.left -= n
	return n, nil
}
