package storage

import (
	"context"
	"iter"
	"slices"
	"strings"
	"sync"
)

// PageLister is implemented by stores that list in byte order of keys, one
// page per request (S3 ListObjectsV2 with StartAfter). Such a listing is
// bounded by round trips, not by the client: ListParallel cuts the key space
// into ranges and keeps several pages in flight.
type PageLister interface {
	// ListPage returns up to limit objects (with attributes) whose keys start
	// with prefix and sort after startAfter, in byte order, and whether
	// more follow.
	ListPage(ctx context.Context, prefix, startAfter string, limit int) (objs []Object, more bool, err error)
}

// PageSize is the number of keys one ListPage request asks for (S3's maximum).
const PageSize = 1000

// DefaultPagesInFlight is ListParallel's bound on concurrent page requests.
const DefaultPagesInFlight = 16

// ParallelListOptions tune ListParallel.
type ParallelListOptions struct {
	// Splits cut the key space into ranges listed at the same time:
	// (-∞, s0], (s0, s1], …, (sn, +∞). Only splits that start with the
	// prefix matter. Their order does not matter; duplicates are ignored.
	Splits []string
	// PagesInFlight bounds the page requests outstanding at once
	// (default DefaultPagesInFlight).
	PagesInFlight int
	// SkipPrefixes are left out: a range that reaches one continues after
	// it (one more request), so a large subtree costs nothing. Each must end
	// in '/' (the key equal to the prefix with its '/' replaced by '0', e.g.
	// "nar0" for "nar/", is skipped too). Only the parallel path skips;
	// a plain listing returns them (callers filter as well).
	SkipPrefixes []string
}

// skipPast is the StartAfter that continues a listing after every key with
// prefix p (which ends in '/': '0' follows it).
func skipPast(p string) string { return p[:len(p)-1] + "0" }

// ListParallel lists st under prefix and yields the objects in batches, in no
// particular order. On a PageLister it lists the ranges of opts.Splits at
// once with at most opts.PagesInFlight requests outstanding; on any other
// store it is ListKeys (objects may then lack attributes) in batches of
// PageSize. After an error nothing more is yielded. Wrappers that implement
// PageLister themselves (Counting) keep the parallel path.
func ListParallel(ctx context.Context, st Store, prefix string, opts ParallelListOptions) iter.Seq2[[]Object, error] {
	pl, ok := As[PageLister](st)
	if !ok || !canListPages(st) {
		return batched(ListKeys(ctx, st, prefix))
	}
	return func(yield func([]Object, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(nil, wrap("list", prefix, err))
			return
		}
		inFlight := opts.PagesInFlight
		if inFlight <= 0 {
			inFlight = DefaultPagesInFlight
		}
		var splits []string
		for _, s := range opts.Splits {
			if strings.HasPrefix(s, prefix) && s != prefix && skipped(s, opts.SkipPrefixes) == "" {
				splits = append(splits, s)
			}
		}
		slices.Sort(splits)
		splits = slices.Compact(splits)

		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		type page struct {
			objs []Object
			err  error
		}
		pages := make(chan page, inFlight)
		sem := make(chan struct{}, inFlight)
		var wg sync.WaitGroup
		for i := 0; i <= len(splits); i++ {
			lo, hi := "", ""
			if i > 0 {
				lo = splits[i-1]
			}
			if i < len(splits) {
				hi = splits[i]
			}
			wg.Go(func() {
				after := lo
				for {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					objs, more, err := pl.ListPage(ctx, prefix, after, PageSize)
					<-sem
					if err != nil {
						select {
						case pages <- page{err: err}:
						case <-ctx.Done():
						}
						return
					}
					end := len(objs)
					if hi != "" {
						end, _ = slices.BinarySearchFunc(objs, hi, func(o Object, k string) int { return strings.Compare(o.Key, k) })
						if end < len(objs) && objs[end].Key == hi {
							end++ // ranges are (lo, hi]
						}
						if end < len(objs) {
							more = false
						}
					}
					resume := ""
					for i := range end {
						if p := skipped(objs[i].Key, opts.SkipPrefixes); p != "" {
							end, resume = i, skipPast(p)
							break
						}
					}
					if end > 0 {
						after = objs[end-1].Key
						select {
						case pages <- page{objs: objs[:end]}:
						case <-ctx.Done():
							return
						}
					}
					if resume != "" {
						if hi != "" && resume > hi {
							return
						}
						after = resume
						continue
					}
					if !more || end == 0 {
						return
					}
				}
			})
		}
		go func() { wg.Wait(); close(pages) }()
		for p := range pages {
			if p.err != nil {
				yield(nil, p.err)
				cancel()
				for range pages { // let the workers finish
				}
				return
			}
			if !yield(p.objs, nil) {
				cancel()
				for range pages {
				}
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(nil, err)
		}
	}
}

func skipped(key string, prefixes []string) string {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return p
		}
	}
	return ""
}

// batched groups a listing into slices of PageSize.
func batched(list iter.Seq2[Object, error]) iter.Seq2[[]Object, error] {
	return func(yield func([]Object, error) bool) {
		batch := make([]Object, 0, PageSize)
		for o, err := range list {
			if err != nil {
				yield(nil, err)
				return
			}
			batch = append(batch, o)
			if len(batch) == PageSize {
				if !yield(batch, nil) {
					return
				}
				batch = make([]Object, 0, PageSize)
			}
		}
		if len(batch) > 0 {
			yield(batch, nil)
		}
	}
}

// canListPages reports whether the driver under st's decorators lists by
// pages: a decorator that forwards ListPage (Counting) does not make a
// store that cannot do it look as if it could.
func canListPages(st Store) bool {
	for st != nil {
		u, wraps := st.(Unwrapper)
		if !wraps {
			_, ok := st.(PageLister)
			return ok
		}
		st = u.Unwrap()
	}
	return false
}
