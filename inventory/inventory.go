// Package inventory reads Amazon S3 Inventory reports (CSV or Parquet) as a
// listing of a bucket, so a pruner of 10⁸–10⁹ objects need not page through
// ListObjectsV2 for all of them.
//
// A report is a manifest.json in the destination bucket naming data files
// (gzip-compressed CSV, or Parquet) with one row per object of the source
// bucket: key, size, last-modified time and ETag at the time the report was
// made. It is hours to a day old when it arrives: objects created since are
// missing, objects deleted since are still in it, objects replaced since
// show their old attributes. What that means for a prune, and how the pruner
// keeps its guarantees, is gc's business (gc.Snapshot); this package only
// reads the report faithfully and checks it (the MD5 of every data file, as
// the manifest states it; the rows' own shape).
//
// ORC reports are not read.
package inventory

import (
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/kiss-cache/kiss/storage"
)

// ErrInvalid: the manifest or a data file cannot be used (malformed, wrong
// checksum, an unsupported format).
var ErrInvalid = errors.New("invalid S3 inventory")

// ErrURL: an inventory URL that names no manifest kiss can read.
var ErrURL = errors.New("invalid inventory URL")

// Manifest is an S3 Inventory manifest.json.
type Manifest struct {
	SourceBucket      string `json:"sourceBucket"`
	DestinationBucket string `json:"destinationBucket"`
	Version           string `json:"version"`
	// CreationTimestamp is in milliseconds since the epoch, as a string:
	// when the report was started (the objects' state is as of about then).
	CreationTimestamp string `json:"creationTimestamp"`
	FileFormat        string `json:"fileFormat"` // CSV, Parquet (ORC is not read)
	FileSchema        string `json:"fileSchema"`
	Files             []File `json:"files"`
}

// File is one data file of a report.
type File struct {
	Key         string `json:"key"`
	Size        int64  `json:"size"`
	MD5Checksum string `json:"MD5checksum"`
}

// Report is an opened report. Its data files are read from the store the
// manifest came from (the destination bucket).
type Report struct {
	st       storage.Store
	manifest Manifest
	taken    time.Time
	tempDir  string
}

// Open reads the manifest at key in st (the inventory's destination bucket).
// tempDir holds a Parquet data file while it is read ("" = os.TempDir()).
func Open(ctx context.Context, st storage.Store, key, tempDir string) (*Report, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("inventory manifest %s: %w", key, err)
	}
	defer r.Close()
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(r, 64<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %v", ErrInvalid, key, err)
	}
	ms, err := strconv.ParseInt(m.CreationTimestamp, 10, 64)
	if err != nil || ms <= 0 {
		return nil, fmt.Errorf("%w: manifest %s: creationTimestamp %q", ErrInvalid, key, m.CreationTimestamp)
	}
	switch strings.ToLower(m.FileFormat) {
	case "csv", "parquet":
	default:
		return nil, fmt.Errorf("%w: manifest %s: file format %q (want CSV or Parquet)", ErrInvalid, key, m.FileFormat)
	}
	if m.SourceBucket == "" {
		return nil, fmt.Errorf("%w: manifest %s names no source bucket", ErrInvalid, key)
	}
	return &Report{st: st, manifest: m, taken: time.UnixMilli(ms).UTC(), tempDir: tempDir}, nil
}

// Manifest returns the report's manifest.
func (r *Report) Manifest() Manifest { return r.manifest }

// Taken is when the report was made (its creationTimestamp).
func (r *Report) Taken() time.Time { return r.taken }

// OpenURL opens the report whose manifest is at rawURL:
// s3://DEST-BUCKET/…/manifest.json?region=… (the store is the bucket, with
// the URL's parameters, opened by open), or a file:// URL or a plain path
// (relative to the working directory, as a STORE path is; open is given the
// directory as a plain path) of a copy of the destination bucket's files:
// data file keys are relative to the
// bucket, so the directory that stands for it is found from the manifest's
// own place (…/<source>/<config>/<date>/manifest.json beside
// …/<source>/<config>/data/). The store is closed by the returned func.
func OpenURL(ctx context.Context, rawURL string, open func(context.Context, string) (storage.Store, error), tempDir string) (*Report, func(), error) {
	var storeURL, key string
	if !strings.Contains(rawURL, "://") {
		// A plain path, as a STORE path is: relative to the working
		// directory, and no URL syntax ('#', '?', '%' are part of names).
		if scheme, _, ok := strings.Cut(rawURL, ":"); ok && (scheme == "s3" || scheme == "file") {
			return nil, nil, fmt.Errorf("%w %q: want %s://…", ErrURL, rawURL, scheme)
		}
		path, err := filepath.Abs(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("%w %q: %v", ErrURL, rawURL, err)
		}
		if storeURL, key, err = fileRoot(path); err != nil {
			return nil, nil, err
		}
	} else {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("%w %q: %v", ErrURL, rawURL, err)
		}
		switch u.Scheme {
		case "s3":
			key = strings.TrimPrefix(u.Path, "/")
			if u.Host == "" || key == "" {
				return nil, nil, fmt.Errorf("%w %q: want s3://BUCKET/…/manifest.json", ErrURL, rawURL)
			}
			u.Path = ""
			storeURL = u.String()
		case "file":
			if u.Host != "" && u.Host != "localhost" {
				return nil, nil, fmt.Errorf("%w %q: file:// URLs take no host (use file:///abs/path/manifest.json)", ErrURL, rawURL)
			}
			if storeURL, key, err = fileRoot(u.Path); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("%w %q: want s3:// or file://", ErrURL, rawURL)
		}
	}
	st, err := open(ctx, storeURL)
	if err != nil {
		return nil, nil, err
	}
	r, err := Open(ctx, st, key, tempDir)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return r, func() { st.Close() }, nil
}

// fileRoot finds, for a manifest at (absolute) path, the directory that
// stands for the destination bucket, as a plain path (no URL: a name may
// hold '#' or '%'), and the manifest's key in it.
func fileRoot(path string) (root, key string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("inventory manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return "", "", fmt.Errorf("%w: manifest %s: %v", ErrInvalid, path, err)
	}
	if len(m.Files) == 0 {
		return "", "", fmt.Errorf("%w: manifest %s names no data file", ErrInvalid, path)
	}
	// The data files' directory without "data/" is the manifest's
	// directory's parent, relative to the bucket.
	dataDir := m.Files[0].Key[:strings.LastIndexByte(m.Files[0].Key, '/')+1]
	cfg, ok := strings.CutSuffix(dataDir, "data/")
	manifestDir := filepath.Dir(filepath.Dir(path)) + "/"
	if !ok || !strings.HasSuffix(manifestDir, "/"+cfg) && manifestDir != "/"+cfg {
		return "", "", fmt.Errorf("%w: manifest %s: its data files (%s…) are not beside it", ErrInvalid, path, dataDir)
	}
	root = strings.TrimSuffix(manifestDir, cfg)
	key, err = filepath.Rel(root, path)
	return root, filepath.ToSlash(key), err
}

// Objects yields every current object of the report (older versions and
// delete markers are left out), in batches, with Key, Size, ModTime and
// ETag (quoted, as S3 listings give it).
func (r *Report) Objects(ctx context.Context) iter.Seq2[[]storage.Object, error] {
	return func(yield func([]storage.Object, error) bool) {
		for _, f := range r.manifest.Files {
			var err error
			stop := false
			emit := func(batch []storage.Object) bool {
				if !yield(batch, nil) {
					stop = true
					return false
				}
				return true
			}
			if strings.EqualFold(r.manifest.FileFormat, "csv") {
				err = r.readCSV(ctx, f, emit)
			} else {
				err = r.readParquet(ctx, f, emit)
			}
			if stop {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
		}
	}
}

const batchSize = 1000

// open reads data file f, checking its MD5 (and size) at EOF.
func (r *Report) open(ctx context.Context, f File) (io.ReadCloser, error) {
	rd, err := r.st.Get(ctx, f.Key)
	if err != nil {
		return nil, fmt.Errorf("inventory data file %s: %w", f.Key, err)
	}
	return &checked{r: rd, f: f, h: md5.New()}, nil
}

// checked verifies a data file's size and MD5 when it has been read whole.
type checked struct {
	r storage.Reader
	f File
	h hash.Hash
	n int64
}

// readError is a data file's read failing in the store (a timeout, a reset
// connection): not a sign that the report is invalid, so what callers see
// is the store's error (transient or not), not ErrInvalid.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// dataFileError wraps err, met reading data file key: ErrInvalid unless
// the store failed to deliver the bytes.
func dataFileError(key string, err error) error {
	var re *readError
	if errors.As(err, &re) {
		return fmt.Errorf("inventory data file %s: %w", key, re.err)
	}
	return fmt.Errorf("%w: data file %s: %w", ErrInvalid, key, err)
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		return n, &readError{err}
	}
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		if c.f.Size > 0 && c.n != c.f.Size {
			return n, fmt.Errorf("%w: data file %s: %d bytes, the manifest says %d", ErrInvalid, c.f.Key, c.n, c.f.Size)
		}
		if c.f.MD5Checksum != "" && hex.EncodeToString(c.h.Sum(nil)) != strings.ToLower(c.f.MD5Checksum) {
			return n, fmt.Errorf("%w: data file %s: MD5 does not match the manifest", ErrInvalid, c.f.Key)
		}
	}
	return n, err
}

func (c *checked) Close() error { return c.r.Close() }

// quoteETag gives an ETag the quotes S3 listings put around it.
func quoteETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) {
		return e
	}
	return `"` + e + `"`
}

func (r *Report) readCSV(ctx context.Context, f File, emit func([]storage.Object) bool) error {
	cols := map[string]int{}
	for i, c := range strings.Split(r.manifest.FileSchema, ",") {
		cols[strings.TrimSpace(c)] = i
	}
	col := func(name string) int {
		if i, ok := cols[name]; ok {
			return i
		}
		return -1
	}
	keyC, sizeC, modC, etagC := col("Key"), col("Size"), col("LastModifiedDate"), col("ETag")
	latestC, markerC := col("IsLatest"), col("IsDeleteMarker")
	if keyC < 0 || sizeC < 0 || modC < 0 {
		return fmt.Errorf("%w: CSV schema %q lacks Key, Size or LastModifiedDate", ErrInvalid, r.manifest.FileSchema)
	}
	rc, err := r.open(ctx, f)
	if err != nil {
		return err
	}
	defer rc.Close()
	var body io.Reader = rc
	if strings.HasSuffix(f.Key, ".gz") {
		gz, err := gzip.NewReader(rc)
		if err != nil {
			return dataFileError(f.Key, err)
		}
		body = gz
	}
	cr := csv.NewReader(body)
	cr.FieldsPerRecord = len(cols)
	cr.ReuseRecord = true
	batch := make([]storage.Object, 0, batchSize)
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return dataFileError(f.Key, err)
		}
		if latestC >= 0 && rec[latestC] == "false" || markerC >= 0 && rec[markerC] == "true" {
			continue
		}
		key, err := url.QueryUnescape(rec[keyC])
		if err != nil {
			return fmt.Errorf("%w: data file %s line %d: key %q: %v", ErrInvalid, f.Key, line, rec[keyC], err)
		}
		size, err := strconv.ParseInt(rec[sizeC], 10, 64)
		if err != nil {
			return fmt.Errorf("%w: data file %s line %d: size %q", ErrInvalid, f.Key, line, rec[sizeC])
		}
		mod, err := time.Parse(time.RFC3339Nano, rec[modC])
		if err != nil {
			return fmt.Errorf("%w: data file %s line %d: last modified %q", ErrInvalid, f.Key, line, rec[modC])
		}
		o := storage.Object{Key: key, Size: size, ModTime: mod}
		if etagC >= 0 {
			o.ETag = quoteETag(rec[etagC])
		}
		batch = append(batch, o)
		if len(batch) == batchSize {
			if !emit(batch) {
				return nil
			}
			batch = make([]storage.Object, 0, batchSize)
		}
		if line%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	// Read to the end, so the checksum is verified before the last batch
	// counts.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	if len(batch) > 0 {
		emit(batch)
	}
	return nil
}

// parquetRow is the part of S3's Parquet inventory schema the pruner uses.
type parquetRow struct {
	Key            string  `parquet:"key"`
	Size           *int64  `parquet:"size,optional"`
	LastModified   *int64  `parquet:"last_modified_date,optional,timestamp(millisecond)"`
	ETag           *string `parquet:"e_tag,optional"`
	IsLatest       *bool   `parquet:"is_latest,optional"`
	IsDeleteMarker *bool   `parquet:"is_delete_marker,optional"`
}

func (r *Report) readParquet(ctx context.Context, f File, emit func([]storage.Object) bool) (err error) {
	// Parquet is read from the end (its footer): the file is copied to a
	// temporary file first, its checksum verified on the way.
	rc, err := r.open(ctx, f)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(r.tempDir, "kiss-inventory-*.parquet")
	if err != nil {
		return err
	}
	os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, rc)
	if err != nil {
		return fmt.Errorf("inventory data file %s: %w", f.Key, err)
	}
	defer func() {
		// parquet-go panics on a schema it cannot convert.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: data file %s: %v", ErrInvalid, f.Key, p)
		}
	}()
	pf, err := parquet.OpenFile(tmp, size)
	if err != nil {
		return fmt.Errorf("%w: data file %s: %v", ErrInvalid, f.Key, err)
	}
	for _, name := range []string{"key", "size", "last_modified_date"} {
		if _, ok := pf.Schema().Lookup(name); !ok {
			return fmt.Errorf("%w: data file %s has no column %s", ErrInvalid, f.Key, name)
		}
	}
	pr := parquet.NewGenericReader[parquetRow](pf)
	defer pr.Close()
	rows := make([]parquetRow, batchSize)
	for {
		n, rerr := pr.Read(rows)
		batch := make([]storage.Object, 0, n)
		for _, row := range rows[:n] {
			if row.IsLatest != nil && !*row.IsLatest || row.IsDeleteMarker != nil && *row.IsDeleteMarker {
				continue
			}
			if row.Size == nil || row.LastModified == nil {
				return fmt.Errorf("%w: data file %s: %s has no size or last-modified time", ErrInvalid, f.Key, row.Key)
			}
			o := storage.Object{Key: row.Key, Size: *row.Size, ModTime: time.UnixMilli(*row.LastModified).UTC()}
			if row.ETag != nil {
				o.ETag = quoteETag(*row.ETag)
			}
			batch = append(batch, o)
		}
		if len(batch) > 0 && !emit(batch) {
			return nil
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: data file %s: %v", ErrInvalid, f.Key, rerr)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
