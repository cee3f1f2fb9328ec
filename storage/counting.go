package storage

import (
	"context"
	"io"
	"iter"
	"sync"
	"time"
)

// RequestCounter is implemented by drivers that count their own HTTP
// requests by operation (s3://), retries included.
type RequestCounter interface {
	Requests() map[string]int64
}

// Counting is a Store decorator that counts calls by operation, so the
// pruner's --json report and the benchmarks can say how many requests of
// each kind a run cost (on S3, requests are what is billed and what is slow).
//
// Keys of Counts():
//
//	get, range, stat, put, put-conditional, delete, delete-conditional, now
//	delete-many          DeleteMany calls
//	delete-many-keys     keys passed to DeleteMany
//	batch-delete         requests DeleteMany needs on this store
//	                     (ceil(keys/MaxBatchDelete); one per key without batches)
//	list                 List calls
//	list-objects         objects List yielded
//	list-pages           pages a paged store needed (ceil(objects/1000), at least 1),
//	                     or ListPage requests (ListParallel)
//	errors               calls that returned an error
//
// If the wrapped store reports its own HTTP requests (the s3:// driver
// does), they are added as "http:<Operation>" (e.g. "http:PutObject"), retries
// included.
type Counting struct {
	inner Store

	mu sync.Mutex
	n  map[string]int64
}

var _ Store = (*Counting)(nil)

// listPageSize is the page size of S3 ListObjectsV2 (and of the estimate
// for other stores).
const listPageSize = 1000

// NewCounting wraps st.
func NewCounting(st Store) *Counting {
	return &Counting{inner: st, n: map[string]int64{}}
}

// Unwrap returns the wrapped store.
func (c *Counting) Unwrap() Store { return c.inner }

func (c *Counting) add(op string, n int64, err error) {
	c.mu.Lock()
	c.n[op] += n
	if err != nil {
		c.n["errors"]++
	}
	c.mu.Unlock()
}

// Counts returns a snapshot of the counters (zero counters are omitted).
func (c *Counting) Counts() map[string]int64 {
	c.mu.Lock()
	out := make(map[string]int64, len(c.n)+8)
	for k, v := range c.n {
		out[k] = v
	}
	c.mu.Unlock()
	if rc, ok := As[RequestCounter](c.inner); ok {
		for k, v := range rc.Requests() {
			out["http:"+k] = v
		}
	}
	return out
}

// Reset zeroes the decorator's own counters (not the driver's HTTP counts).
func (c *Counting) Reset() {
	c.mu.Lock()
	c.n = map[string]int64{}
	c.mu.Unlock()
}

func (c *Counting) Get(ctx context.Context, key string) (Reader, error) {
	r, err := c.inner.Get(ctx, key)
	c.add("get", 1, err)
	return r, err
}

func (c *Counting) GetRange(ctx context.Context, key string, offset, length int64) (Reader, error) {
	r, err := c.inner.GetRange(ctx, key, offset, length)
	c.add("range", 1, err)
	return r, err
}

func (c *Counting) Stat(ctx context.Context, key string) (Object, error) {
	o, err := c.inner.Stat(ctx, key)
	c.add("stat", 1, err)
	return o, err
}

// StatMany passes the run on (so the file driver's directory reuse
// survives counting) and counts one stat per key, added once per run (a
// lock per key was measurable on a million stats).
func (c *Counting) StatMany(ctx context.Context, keys []string, each func(i int, o Object, err error) error) error {
	var n, failed int64
	defer func() {
		if n == 0 {
			return
		}
		c.mu.Lock()
		c.n["stat"] += n
		if failed > 0 {
			c.n["errors"] += failed
		}
		c.mu.Unlock()
	}()
	return StatMany(ctx, c.inner, keys, func(i int, o Object, err error) error {
		n++
		if err != nil {
			failed++
		}
		return each(i, o, err)
	})
}

func (c *Counting) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	o, err := c.inner.Put(ctx, key, r, opts)
	op := "put"
	if opts.IfNotExist || opts.IfMatch != "" {
		op = "put-conditional"
	}
	c.add(op, 1, err)
	return o, err
}

func (c *Counting) Delete(ctx context.Context, key string, opts DeleteOptions) error {
	err := c.inner.Delete(ctx, key, opts)
	op := "delete"
	if opts.IfMatch != "" {
		op = "delete-conditional"
	}
	c.add(op, 1, err)
	return err
}

func (c *Counting) DeleteMany(ctx context.Context, keys []string) error {
	err := c.inner.DeleteMany(ctx, keys)
	batch := int64(c.inner.Capabilities().MaxBatchDelete)
	reqs := int64(len(keys))
	if batch > 0 {
		reqs = (int64(len(keys)) + batch - 1) / batch
	}
	c.mu.Lock()
	c.n["delete-many"]++
	c.n["delete-many-keys"] += int64(len(keys))
	c.n["batch-delete"] += reqs
	if err != nil {
		c.n["errors"]++
	}
	c.mu.Unlock()
	return err
}

func (c *Counting) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return c.countList(c.inner.List(ctx, prefix))
}

// ListKeys counts like List; it passes on the inner store's ListKeys (keys
// only on file://, whole objects elsewhere).
func (c *Counting) ListKeys(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return c.countList(ListKeys(ctx, c.inner, prefix))
}

// ListKeyBatches is ListKeys in batches (KeyBatchLister), counted the same
// way.
func (c *Counting) ListKeyBatches(ctx context.Context, prefix string) iter.Seq2[[]Object, error] {
	return func(yield func([]Object, error) bool) {
		var n int64
		var failed error
		defer func() { c.listed(n, failed) }()
		for b, err := range listKeyBatches(ctx, c.inner, prefix) {
			if err != nil {
				failed = err
			} else {
				n += int64(len(b))
			}
			if !yield(b, err) {
				return
			}
		}
	}
}

// ListPage counts one page request (PageLister); it is used only when the
// wrapped store lists by pages (see ListParallel).
func (c *Counting) ListPage(ctx context.Context, prefix, startAfter string, limit int) ([]Object, bool, error) {
	pl, ok := As[PageLister](c.inner)
	if !ok {
		return nil, false, wrap("list", prefix, ErrNotSupported)
	}
	objs, more, err := pl.ListPage(ctx, prefix, startAfter, limit)
	c.mu.Lock()
	c.n["list-pages"]++
	c.n["list-objects"] += int64(len(objs))
	if err != nil {
		c.n["errors"]++
	}
	c.mu.Unlock()
	return objs, more, err
}

// listed counts one listing of n objects (pages as S3 would make them).
func (c *Counting) listed(n int64, failed error) {
	pages := max(1, (n+listPageSize-1)/listPageSize)
	c.mu.Lock()
	c.n["list"]++
	c.n["list-objects"] += n
	c.n["list-pages"] += pages
	if failed != nil {
		c.n["errors"]++
	}
	c.mu.Unlock()
}

func (c *Counting) countList(list iter.Seq2[Object, error]) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		var n int64
		var failed error
		defer func() { c.listed(n, failed) }()
		for o, err := range list {
			if err != nil {
				failed = err
			} else {
				n++
			}
			if !yield(o, err) {
				return
			}
		}
	}
}

func (c *Counting) Now(ctx context.Context) (time.Time, error) {
	t, err := c.inner.Now(ctx)
	c.add("now", 1, err)
	return t, err
}

func (c *Counting) Capabilities() Capabilities { return c.inner.Capabilities() }
func (c *Counting) URL() string                { return c.inner.URL() }
func (c *Counting) Close() error               { return c.inner.Close() }
