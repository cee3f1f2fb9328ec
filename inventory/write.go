package inventory

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/kiss-cache/kiss/storage"
)

// The CSV columns Write writes, in S3's names and order.
const csvSchema = "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker"

// parquetOut is S3's Parquet schema (the columns Write writes). Optional
// columns are pointers: parquet-go writes a zero value of a plain field as
// null.
type parquetOut struct {
	Bucket         string  `parquet:"bucket"`
	Key            string  `parquet:"key"`
	Size           *int64  `parquet:"size,optional"`
	LastModified   *int64  `parquet:"last_modified_date,optional,timestamp(millisecond)"`
	ETag           *string `parquet:"e_tag,optional"`
	IsLatest       *bool   `parquet:"is_latest,optional"`
	IsDeleteMarker *bool   `parquet:"is_delete_marker,optional"`
}

// Write writes a report in S3 Inventory's layout and formats (format "CSV"
// or "Parquet") describing objs of sourceBucket as of taken, under prefix
// in dest, in data files of at most perFile rows; it returns the manifest's
// key. S3 makes these itself; Write is for tests and for stores without S3
// Inventory.
func Write(ctx context.Context, dest storage.Store, prefix, sourceBucket, format string, taken time.Time, objs []storage.Object, perFile int) (string, error) {
	if perFile <= 0 {
		perFile = 100000
	}
	// S3's layout: <prefix>/<source>/<config>/data/<file> and
	// <prefix>/<source>/<config>/<date>/manifest.json.
	cfg := strings.TrimSuffix(prefix, "/") + "/" + sourceBucket + "/kiss/"
	date := taken.UTC().Format("2006-01-02T15-04Z")
	m := Manifest{
		SourceBucket: sourceBucket, DestinationBucket: "arn:aws:s3:::inventory", Version: "2016-11-30",
		CreationTimestamp: strconv.FormatInt(taken.UnixMilli(), 10), FileFormat: format,
	}
	switch strings.ToLower(format) {
	case "csv":
		m.FileSchema = csvSchema
	case "parquet":
		m.FileSchema = "message s3.inventory { required binary bucket (STRING); required binary key (STRING); optional int64 size; optional int64 last_modified_date (TIMESTAMP(MILLIS,true)); optional binary e_tag (STRING); optional boolean is_latest; optional boolean is_delete_marker; }"
	default:
		return "", fmt.Errorf("%w: format %q", ErrInvalid, format)
	}
	for start := 0; start < len(objs) || start == 0; start += perFile {
		part := objs[start:min(start+perFile, len(objs))]
		var buf bytes.Buffer
		var key string
		if m.FileFormat == "CSV" || strings.EqualFold(format, "csv") {
			key = fmt.Sprintf("%sdata/%s-%05d.csv.gz", cfg, date, start/perFile)
			gz := gzip.NewWriter(&buf)
			w := csv.NewWriter(gz)
			for _, o := range part {
				_ = w.Write([]string{sourceBucket, url.QueryEscape(o.Key), strconv.FormatInt(o.Size, 10),
					o.ModTime.UTC().Format("2006-01-02T15:04:05.000Z"), strings.Trim(o.ETag, `"`), "true", "false"})
			}
			w.Flush()
			if err := w.Error(); err != nil {
				return "", err
			}
			if err := gz.Close(); err != nil {
				return "", err
			}
		} else {
			key = fmt.Sprintf("%sdata/%s-%05d.parquet", cfg, date, start/perFile)
			rows := make([]parquetOut, len(part))
			for i, o := range part {
				size, mod, etag, yes, no := o.Size, o.ModTime.UnixMilli(), strings.Trim(o.ETag, `"`), true, false
				rows[i] = parquetOut{Bucket: sourceBucket, Key: o.Key, Size: &size, LastModified: &mod, ETag: &etag, IsLatest: &yes, IsDeleteMarker: &no}
			}
			if err := parquet.Write(&buf, rows); err != nil {
				return "", err
			}
		}
		sum := md5.Sum(buf.Bytes())
		if _, err := dest.Put(ctx, key, bytes.NewReader(buf.Bytes()), storage.PutOptions{}); err != nil {
			return "", err
		}
		m.Files = append(m.Files, File{Key: key, Size: int64(buf.Len()), MD5Checksum: hex.EncodeToString(sum[:])})
		if len(objs) == 0 {
			break
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	key := cfg + date + "/manifest.json"
	if _, err := dest.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{ContentType: "application/json"}); err != nil {
		return "", err
	}
	return key, nil
}
