package storagetest

import (
	"context"
	"errors"
	"io"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// Op names a Store method for fault injection.
type Op string

// The operations a Fault can match.
const (
	OpAny        Op = ""
	OpGet        Op = "get"
	OpGetRange   Op = "getrange"
	OpStat       Op = "stat"
	OpPut        Op = "put"
	OpDelete     Op = "delete"
	OpDeleteMany Op = "deletemany"
	OpList       Op = "list"
	OpNow        Op = "now"
)

// ErrInjected is the default injected failure: a transient error (like a
// timeout or a 5xx), so storage.IsTransient reports true and callers retry.
var ErrInjected error = injectedError{}

type injectedError struct{}

func (injectedError) Error() string   { return "injected fault (transient)" }
func (injectedError) Transient() bool { return true }
func (injectedError) Timeout() bool   { return true }

// Fault describes one injected misbehaviour. A call matches when its Op and
// key agree (OpAny / empty KeyPrefix match everything) and, for Put, its
// condition agrees; the Nth matching call (1-based; 0 means the first) and
// the Times-1 following matching calls (Times 0 means 1; negative means
// forever) are affected.
type Fault struct {
	Op        Op
	KeyPrefix string
	// Cond restricts Put faults: "create" (IfNotExist), "cas" (IfMatch),
	// "plain"; empty matches any.
	Cond  string
	Nth   int
	Times int
	// Err is returned instead of the result (ErrInjected when nil and Fail
	// or LoseResponse is set).
	Err error
	// Fail: the call is not applied; Err is returned.
	Fail bool
	// LoseResponse: the call IS applied to the store, then Err is returned,
	// as when a response is lost after the server committed the write.
	LoseResponse bool
	// Delay is slept (context-aware) before the call; with a synctest
	// bubble or a fake clock it is deterministic.
	Delay time.Duration
	// Hook, if set, runs before the call (after Delay), e.g. to pause a
	// goroutine at an exact point of a protocol.
	Hook func(op Op, key string)
}

type rule struct {
	Fault
	seen, fired int
}

// Faulty is a storage.Store decorator that injects faults: fail the Nth
// operation, lose the response after the store applied it, slow operations.
// It also counts calls per Op. Safe for concurrent use.
type Faulty struct {
	inner storage.Store
	mu    sync.Mutex
	rules []*rule
	calls map[Op]int
}

var _ storage.Store = (*Faulty)(nil)

// NewFaulty wraps st.
func NewFaulty(st storage.Store) *Faulty {
	return &Faulty{inner: st, calls: map[Op]int{}}
}

// Unwrap returns the wrapped store.
func (f *Faulty) Unwrap() storage.Store { return f.inner }

// Inject adds a fault rule; rules are checked in the order added and the
// first that fires wins.
func (f *Faulty) Inject(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{Fault: fault})
}

// Reset removes every rule (call counts are kept).
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Calls returns how many calls of op were made (OpAny: all).
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op == OpAny {
		n := 0
		for _, c := range f.calls {
			n += c
		}
		return n
	}
	return f.calls[op]
}

// Fired returns how many times the current rules fired (since the last Reset).
func (f *Faulty) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.rules {
		n += r.fired
	}
	return n
}

func condOf(o storage.PutOptions) string {
	switch {
	case o.IfNotExist:
		return "create"
	case o.IfMatch != "":
		return "cas"
	}
	return "plain"
}

// match records the call and returns the fault to apply (zero if none).
func (f *Faulty) match(op Op, key, cond string) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	for _, r := range f.rules {
		if r.Op != OpAny && r.Op != op {
			continue
		}
		if r.KeyPrefix != "" && !strings.HasPrefix(key, r.KeyPrefix) {
			continue
		}
		if r.Cond != "" && r.Cond != cond {
			continue
		}
		r.seen++
		if !inWindow(r.seen, r.Nth, r.Times) {
			continue
		}
		r.fired++
		fl := r.Fault
		if fl.Err == nil {
			fl.Err = ErrInjected
		}
		return fl, true
	}
	return Fault{}, false
}

// inWindow reports whether the seen-th matching call is affected by a rule
// that hits the nth matching call (0 means the first) and the times-1
// following ones (0 means 1, negative means forever). Faulty and FaultProxy
// count the same way.
func inWindow(seen, nth, times int) bool {
	nth = max(nth, 1)
	if times == 0 {
		times = 1
	}
	return seen >= nth && (times < 0 || seen < nth+times)
}

// before applies Delay/Hook and reports whether the call must fail without
// being applied.
func (f *Faulty) before(ctx context.Context, op Op, key, cond string) (Fault, bool, error) {
	fl, ok := f.match(op, key, cond)
	if !ok {
		return fl, false, nil
	}
	if fl.Delay > 0 {
		t := time.NewTimer(fl.Delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fl, true, &storage.Error{Op: string(op), Key: key, Err: ctx.Err()}
		case <-t.C:
		}
	}
	if fl.Hook != nil {
		fl.Hook(op, key)
	}
	if fl.Fail {
		return fl, true, &storage.Error{Op: string(op), Key: key, Err: fl.Err}
	}
	return fl, true, nil
}

// after turns a successful applied call into a lost response if asked.
func after(fl Fault, hit bool, op Op, key string, err error) error {
	if hit && fl.LoseResponse && err == nil {
		return &storage.Error{Op: string(op), Key: key, Err: fl.Err}
	}
	return err
}

// Get implements storage.Store.
func (f *Faulty) Get(ctx context.Context, key string) (storage.Reader, error) {
	fl, hit, err := f.before(ctx, OpGet, key, "")
	if err != nil {
		return nil, err
	}
	r, err := f.inner.Get(ctx, key)
	if e := after(fl, hit, OpGet, key, err); e != err {
		r.Close()
		return nil, e
	}
	return r, err
}

// GetRange implements storage.Store.
func (f *Faulty) GetRange(ctx context.Context, key string, offset, length int64) (storage.Reader, error) {
	fl, hit, err := f.before(ctx, OpGetRange, key, "")
	if err != nil {
		return nil, err
	}
	r, err := f.inner.GetRange(ctx, key, offset, length)
	if e := after(fl, hit, OpGetRange, key, err); e != err {
		r.Close()
		return nil, e
	}
	return r, err
}

// Stat implements storage.Store.
func (f *Faulty) Stat(ctx context.Context, key string) (storage.Object, error) {
	fl, hit, err := f.before(ctx, OpStat, key, "")
	if err != nil {
		return storage.Object{}, err
	}
	o, err := f.inner.Stat(ctx, key)
	if e := after(fl, hit, OpStat, key, err); e != err {
		return storage.Object{}, e
	}
	return o, err
}

// Put implements storage.Store.
func (f *Faulty) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Object, error) {
	fl, hit, err := f.before(ctx, OpPut, key, condOf(opts))
	if err != nil {
		return storage.Object{}, err
	}
	o, err := f.inner.Put(ctx, key, r, opts)
	if e := after(fl, hit, OpPut, key, err); e != err {
		return storage.Object{}, e
	}
	return o, err
}

// Delete implements storage.Store.
func (f *Faulty) Delete(ctx context.Context, key string, opts storage.DeleteOptions) error {
	fl, hit, err := f.before(ctx, OpDelete, key, "")
	if err != nil {
		return err
	}
	return after(fl, hit, OpDelete, key, f.inner.Delete(ctx, key, opts))
}

// DeleteMany implements storage.Store. Key matching uses the first key.
func (f *Faulty) DeleteMany(ctx context.Context, keys []string) error {
	first := ""
	if len(keys) > 0 {
		first = keys[0]
	}
	fl, hit, err := f.before(ctx, OpDeleteMany, first, "")
	if err != nil {
		return err
	}
	return after(fl, hit, OpDeleteMany, first, f.inner.DeleteMany(ctx, keys))
}

// List implements storage.Store. A fault on List fails the listing before
// it yields anything (Fail or LoseResponse alike).
func (f *Faulty) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return f.list(ctx, prefix, f.inner.List)
}

// ListKeys is List's keys-only form (storage.KeyLister), with List's
// faults: without it storage.ListKeys would find the inner store's
// through Unwrap and bypass them.
func (f *Faulty) ListKeys(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return f.list(ctx, prefix, func(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
		return storage.ListKeys(ctx, f.inner, prefix)
	})
}

func (f *Faulty) list(ctx context.Context, prefix string, inner func(context.Context, string) iter.Seq2[storage.Object, error]) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		fl, hit, err := f.before(ctx, OpList, prefix, "")
		if err == nil && hit && fl.LoseResponse {
			err = &storage.Error{Op: string(OpList), Key: prefix, Err: fl.Err}
		}
		if err != nil {
			yield(storage.Object{}, err)
			return
		}
		for o, err := range inner(ctx, prefix) {
			if !yield(o, err) {
				return
			}
		}
	}
}

// Now implements storage.Store.
func (f *Faulty) Now(ctx context.Context) (time.Time, error) {
	fl, hit, err := f.before(ctx, OpNow, "", "")
	if err != nil {
		return time.Time{}, err
	}
	t, err := f.inner.Now(ctx)
	if e := after(fl, hit, OpNow, "", err); e != err {
		return time.Time{}, e
	}
	return t, err
}

// Capabilities implements storage.Store.
func (f *Faulty) Capabilities() storage.Capabilities { return f.inner.Capabilities() }

// URL implements storage.Store.
func (f *Faulty) URL() string { return f.inner.URL() }

// Close implements storage.Store.
func (f *Faulty) Close() error { return f.inner.Close() }

// IsInjected reports whether err came from a Faulty rule with the default error.
func IsInjected(err error) bool { return errors.Is(err, ErrInjected) }
