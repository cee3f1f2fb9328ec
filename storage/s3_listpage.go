package storage

import (
	"context"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

var _ PageLister = (*s3Store)(nil)

// ListPage is one ListObjectsV2 request with StartAfter (PageLister), so
// ListParallel can list several key ranges of a bucket at once: one page at
// a time, a bucket of 10⁸ keys is 10⁵ round trips in a row.
func (s *s3Store) ListPage(ctx context.Context, prefix, startAfter string, limit int) ([]Object, bool, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, false, wrap("list", prefix, err)
	}
	in := &s3.ListObjectsV2Input{
		Bucket:  aws.String(s.name),
		MaxKeys: aws.Int32(int32(min(limit, PageSize))),
	}
	if prefix != "" {
		in.Prefix = aws.String(s3Key(prefix))
	}
	if startAfter != "" {
		in.StartAfter = aws.String(s3Key(startAfter))
	}
	out, err := s.client.ListObjectsV2(ctx, in)
	if err != nil {
		return nil, false, wrap("list", prefix, mapS3Err(err))
	}
	objs := make([]Object, 0, len(out.Contents))
	for _, c := range out.Contents {
		o := Object{Key: s3Unkey(aws.ToString(c.Key)), Size: aws.ToInt64(c.Size), ETag: aws.ToString(c.ETag)}
		if c.LastModified != nil {
			o.ModTime = *c.LastModified
		}
		objs = append(objs, o)
	}
	return objs, aws.ToBool(out.IsTruncated), nil
}

// s3Unkey is the inverse of s3Key: the key kiss uses for an S3 object name
// that s3blob escaped ("__0x2f__" → "/", "__0x5f__" → "_").
func s3Unkey(name string) string {
	if !strings.Contains(name, "__0x") {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] == '_' && looksEscaped(name[i:]) {
			rest := name[i+len("__0x"):]
			end := strings.IndexByte(rest, '_')
			if v, err := strconv.ParseInt(rest[:end], 16, 32); err == nil && v >= 0 && v < 0x80 {
				b.WriteByte(byte(v))
				i += len("__0x") + end + len("__") - 1
				continue
			}
		}
		b.WriteByte(name[i])
	}
	return b.String()
}
