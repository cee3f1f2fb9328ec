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
// particular order. On a PageLister it starts with one plain listing and
// splits it into ranges (at opts.Splits) only as pages show the listing is
// large: every full page earns one split, and a range whose page came back
// full hands the upper half of its remaining splits to a new range while
// earned splits are left. The ranges share opts.PagesInFlight page requests
// (first come, first served). So a small bucket costs what one listing costs
// (a bucket of up to 1000 keys one request), a large one has PagesInFlight
// pages in flight after a few round trips and ends up cut at every split,
// its ranges advancing side by side (none is left to finish alone), and no
// listing makes more than twice the requests of a plain one plus one (a
// range ends with at most one page that is not full). On any other
// store it is ListKeys (objects may then lack attributes) in batches of
// PageSize. After an error nothing more is yielded. Wrappers that implement
// PageLister themselves (Counting) keep the parallel path.
func ListParallel(ctx context.Context, st Store, prefix string, opts ParallelListOptions) iter.Seq2[[]Object, error] {
	pl, ok := As[PageLister](st)
	if !ok || !canListPages(st) {
		return listKeyBatches(ctx, st, prefix)
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
		l := &rangeLister{pl: pl, prefix: prefix, skip: opts.SkipPrefixes, splits: splits,
			sem: make(chan struct{}, inFlight), pages: make(chan listedPage, inFlight)}
		l.start(ctx, keyRange{j: len(splits)})
		go func() { l.wg.Wait(); close(l.pages) }()
		for p := range l.pages {
			if p.err != nil {
				yield(nil, p.err)
				cancel()
				for range l.pages { // let the workers finish
				}
				return
			}
			if !yield(p.objs, nil) {
				cancel()
				for range l.pages {
				}
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(nil, err)
		}
	}
}

// keyRange is the part (after, hi] of the key space that one worker lists
// (hi "" = no end); splits[i:j] are the cut points that may still split it.
type keyRange struct {
	after, hi string
	i, j      int
}

type listedPage struct {
	objs []Object
	err  error
}

// rangeLister runs ListParallel's workers: one per range, each with at most
// one page request outstanding, all of them at most cap(sem).
type rangeLister struct {
	pl     PageLister
	prefix string
	skip   []string
	splits []string
	sem    chan struct{}
	pages  chan listedPage
	wg     sync.WaitGroup

	mu sync.Mutex
	// earned counts full pages, spent the ranges started after the first:
	// a split is made only while spent < earned.
	earned, spent int
}

func (l *rangeLister) start(ctx context.Context, r keyRange) {
	l.wg.Go(func() { l.list(ctx, r) })
}

// split: r's last page was full. That earns a split, and if one is left, r
// hands the upper half of its remaining cut points to a new range.
func (l *rangeLister) split(ctx context.Context, r *keyRange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.earned++
	if l.spent >= l.earned {
		return
	}
	for r.i < r.j && l.splits[r.i] <= r.after {
		r.i++
	}
	if r.i == r.j {
		return
	}
	m := (r.i + r.j) / 2
	l.spent++
	l.start(ctx, keyRange{after: l.splits[m], hi: r.hi, i: m + 1, j: r.j})
	r.hi, r.j = l.splits[m], m
}

// list pages through r. Keys in skipped subtrees are dropped from a page;
// a page that ends inside one continues after it (one request per subtree
// met, however large).
func (l *rangeLister) list(ctx context.Context, r keyRange) {
	for {
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		objs, more, err := l.pl.ListPage(ctx, l.prefix, r.after, PageSize)
		<-l.sem
		if err != nil {
			select {
			case l.pages <- listedPage{err: err}:
			case <-ctx.Done():
			}
			return
		}
		full := more
		end := len(objs)
		if r.hi != "" {
			end, _ = slices.BinarySearchFunc(objs, r.hi, func(o Object, k string) int { return strings.Compare(o.Key, k) })
			if end < len(objs) && objs[end].Key == r.hi {
				end++ // ranges are (after, hi]
			}
			if end < len(objs) {
				more = false
			}
		}
		if end == 0 {
			return
		}
		last := objs[end-1].Key
		if kept := l.unskipped(objs[:end]); len(kept) > 0 {
			select {
			case l.pages <- listedPage{objs: kept}:
			case <-ctx.Done():
				return
			}
		}
		if !more {
			return
		}
		r.after = last
		if p := skipped(last, l.skip); p != "" {
			if r.after = skipPast(p); r.hi != "" && r.after >= r.hi {
				return
			}
		}
		if full {
			l.split(ctx, &r)
		}
	}
}

// unskipped is objs without the keys in skipped subtrees (objs itself when
// there are none).
func (l *rangeLister) unskipped(objs []Object) []Object {
	if len(l.skip) == 0 {
		return objs
	}
	first := slices.IndexFunc(objs, func(o Object) bool { return skipped(o.Key, l.skip) != "" })
	if first < 0 {
		return objs
	}
	kept := slices.Clone(objs[:first])
	for _, o := range objs[first+1:] {
		if skipped(o.Key, l.skip) == "" {
			kept = append(kept, o)
		}
	}
	return kept
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
