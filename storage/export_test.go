package storage

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3ClientOf returns the SDK client inside an s3:// store, so benchmarks can
// compare the store's read path with a bare call on the very same client.
func S3ClientOf(st Store) *s3.Client { return st.(*s3Store).client }

// S3Key is s3Key, the S3 object name of a key.
var S3Key = s3Key

// PresignsDirectly reports whether an s3 store signs URLs without the SDK's
// presign client (the fast path of PresignGet).
func PresignsDirectly(st Store) bool {
	s, ok := As[*s3Store](st)
	return ok && s.urls() != nil
}

// WithoutOpenat2 makes the file driver walk directories itself, as on a
// kernel without openat2(2), until the returned function is called.
func WithoutOpenat2() (restore func()) {
	old := noOpenat2.Load()
	noOpenat2.Store(true)
	return func() { noOpenat2.Store(old) }
}

// UnlinkInParallel makes the file driver's DeleteMany take its unlinks for
// slow (always: true) or fast (never: false) after its first probe keys,
// until the returned function is called.
func UnlinkInParallel(always bool, probe int) (restore func()) {
	oldProbe, oldSlow := unlinkProbe, slowUnlink
	unlinkProbe = probe
	slowUnlink = time.Hour
	if always {
		slowUnlink = -1
	}
	return func() { unlinkProbe, slowUnlink = oldProbe, oldSlow }
}

// SetS3ResponseHeaderTimeout sets how long an s3 store opened afterwards
// waits for a response's headers, until the returned function is called.
func SetS3ResponseHeaderTimeout(d time.Duration) (restore func()) {
	old := s3ResponseHeaderTimeout
	s3ResponseHeaderTimeout = d
	return func() { s3ResponseHeaderTimeout = old }
}
