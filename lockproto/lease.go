package lockproto

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// Keys. Everything the protocol writes lives under LockPrefix, inside the
// cache, so it works wherever the cache itself is writable. The layout is
// nixcache's (the one owner of key rules).
const (
	// LockPrefix is the directory of all leases.
	LockPrefix = nixcache.LockPrefix
	// PruneKey is the single exclusive lease.
	PruneKey = nixcache.PruneLeaseKey
	// RecordVersion is the body's schema version.
	RecordVersion = 1
	// maxBody bounds how much of a lease body is read back.
	maxBody = nixcache.MaxLeaseSize
)

// leaseContentType is what leases are stored as.
var leaseContentType = nixcache.KindLease.Rules().ContentType

// Timing defaults; every other duration derives from the TTL.
const (
	// DefaultTTL: a lease whose ModTime is older than this on the store's
	// clock is stale and may be taken over (prune) or ignored (writer).
	DefaultTTL = 30 * time.Minute
	// DefaultReleaseGrace bounds Release after the caller's context was
	// cancelled (Ctrl-C, SIGTERM): the lease is still removed.
	DefaultReleaseGrace = 30 * time.Second
	// MinTTL keeps the derived intervals meaningful.
	MinTTL = 600 * time.Millisecond
	// DefaultMaxTTL bounds the TTL a lease may declare (Options.MaxTTL,
	// Judging.MaxTTL): a holder killed with SIGKILL blocks others for at
	// most this long, whatever it declared.
	DefaultMaxTTL = 6 * time.Hour
)

// Kind is what a lease is for.
type Kind string

const (
	// KindPrune is the exclusive lease of a pruner.
	KindPrune Kind = "prune"
	// KindWriter is a shared lease of one uploading job.
	KindWriter Kind = "writer"
)

// Sentinels.
var (
	// ErrLeaseLost: the lease can no longer be shown to be held (taken over,
	// broken, lapsed, or not refreshable within TTL/2). Work done under it
	// must stop; for the pruner, nothing more may be deleted.
	ErrLeaseLost = errors.New("lease lost")
	// ErrUnsupportedStore: the store lacks atomic create or compare-and-swap.
	ErrUnsupportedStore = fmt.Errorf("lock protocol needs atomic create-if-absent and compare-and-swap: %w", storage.ErrNotSupported)
	// ErrNotStale: Break refused a fresh lease without force.
	ErrNotStale = errors.New("lease is not stale")
	// ErrInvalidJob: a writer job name that cannot be part of a key.
	ErrInvalidJob = errors.New("invalid job name")
	// ErrTTLTooLong: a lease was to be taken with a TTL over MaxTTL.
	ErrTTLTooLong = errors.New("lease TTL exceeds the maximum lease TTL")
)

// Options configure acquisition. The zero value is usable.
type Options struct {
	// TTL: staleness threshold (default 30 min). Refresh every TTL/6; the
	// holder cancels its own work if it could not refresh for TTL/2.
	TTL time.Duration
	// MaxTTL bounds TTL (acquiring with more is refused, ErrTTLTooLong)
	// and how far a lease's declared TTL lengthens this holder's judgement
	// of others' leases (default DefaultMaxTTL). Every host should use the
	// same bound (see Judging).
	MaxTTL time.Duration
	// Wait: how long to keep trying while someone else holds the lock;
	// 0 means exactly one attempt.
	Wait time.Duration
	// Owner is free text for humans ("prune", a job name, a CI run).
	Owner string
	// Logger receives protocol events; slog.Default() when nil.
	Logger *slog.Logger

	// Command is recorded in the body (default: os.Args joined).
	Command string
	// Poll is the pause between attempts while waiting (default
	// clamp(TTL/60, 50ms, 5s), with jitter).
	Poll time.Duration
	// ReleaseGrace bounds Release once the caller's context is cancelled
	// (default 30 s).
	ReleaseGrace time.Duration
}

func (o Options) withDefaults() Options {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < MinTTL {
		o.TTL = MinTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Command == "" {
		o.Command = strings.Join(os.Args, " ")
	}
	if o.Poll <= 0 {
		o.Poll = min(max(o.TTL/60, 50*time.Millisecond), 5*time.Second)
	}
	if o.ReleaseGrace <= 0 {
		o.ReleaseGrace = DefaultReleaseGrace
	}
	if o.Wait < 0 {
		o.Wait = 0
	}
	return o
}

// judging is how this holder judges others' leases.
func (o Options) judging() Judging { return Judging{TTL: o.TTL, MaxTTL: o.MaxTTL} }

// checkTTL refuses a TTL over the bound: a holder that declared more than
// others' MaxTTL would be judged stale while it still refreshes on its own
// longer schedule (the spin model's late_abort variant).
func (o Options) checkTTL() error {
	if o.TTL > o.MaxTTL {
		return fmt.Errorf("%w: %v > %v (raise the bound on every host, or use a shorter TTL)", ErrTTLTooLong, o.TTL, o.MaxTTL)
	}
	return nil
}

// Judging is how leases found in the store are judged: a lease is stale
// once its age on the store's clock exceeds TTL, or the TTL it declares in
// its body if that is longer, but never more than MaxTTL (which also caps
// TTL itself). A lease that
// declares more than MaxTTL is judged as if it declared MaxTTL (and is
// flagged, Holder.TTLCapped), so a holder killed with SIGKILL after
// declaring a year blocks others for MaxTTL, not a year. Zero fields take
// DefaultTTL and DefaultMaxTTL.
type Judging struct {
	TTL, MaxTTL time.Duration
}

func (j Judging) withDefaults() Judging {
	if j.TTL <= 0 {
		j.TTL = DefaultTTL
	}
	if j.MaxTTL <= 0 {
		j.MaxTTL = DefaultMaxTTL
	}
	return j
}

// RefreshInterval is how often a held lease is refreshed: TTL/6.
func RefreshInterval(ttl time.Duration) time.Duration { return ttl / 6 }

// AbortAfter is how long a holder may go without a successful refresh
// before it cancels its own work: TTL/2, leaving TTL/2 of margin for clock
// rate differences and in-flight requests before others judge it stale.
func AbortAfter(ttl time.Duration) time.Duration { return ttl / 2 }

// Record is the JSON body of a lease. It is for humans and for resolving
// ambiguous writes (Nonce); staleness never depends on Created.
type Record struct {
	Version int       `json:"version"`
	Kind    Kind      `json:"kind"`
	Nonce   string    `json:"nonce"`
	Owner   string    `json:"owner,omitempty"`
	Job     string    `json:"job,omitempty"`
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Command string    `json:"command,omitempty"`
	Created time.Time `json:"created"`
	TTL     string    `json:"ttl,omitempty"`
}

func newNonce() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("lockproto: crypto/rand: %v", err)) // never happens on Linux
	}
	return hex.EncodeToString(b[:])
}

// chanMutex is a mutex made of a one-slot channel.
type chanMutex chan struct{}

func (m chanMutex) Lock()   { m <- struct{}{} }
func (m chanMutex) Unlock() { <-m }

func newRecord(kind Kind, job string, o Options) Record {
	host, _ := os.Hostname()
	return Record{
		Version: RecordVersion,
		Kind:    kind,
		Nonce:   newNonce(),
		Owner:   o.Owner,
		Job:     job,
		Host:    host,
		PID:     os.Getpid(),
		Command: o.Command,
		Created: time.Now().UTC().Round(time.Millisecond),
		TTL:     o.TTL.String(),
	}
}

// Holder describes one lease found in the store.
type Holder struct {
	Key  string `json:"key"`
	Kind Kind   `json:"kind"`
	// Record is nil when the body could not be read or parsed (the lease
	// still counts: fail closed).
	Record  *Record   `json:"record,omitempty"`
	ModTime time.Time `json:"mtime"`
	// Age is store Now minus ModTime (0 for a future ModTime).
	Age time.Duration `json:"age_ns"`
	// Ahead is ModTime minus store Now when ModTime is in the future (a
	// clock that stepped back, or a touched file): such a lease counts as
	// just refreshed until the store's clock passes ModTime, so an
	// operator needs to see it.
	Ahead time.Duration `json:"ahead_ns,omitempty"`
	Stale bool          `json:"stale"`
	ETag  string        `json:"etag"`
	// TTLCapped: the lease declares a TTL over the judge's MaxTTL and was
	// judged with MaxTTL instead (Judging).
	TTLCapped bool `json:"ttl_capped,omitempty"`
	// BodyError explains a nil Record.
	BodyError string `json:"body_error,omitempty"`
}

func (h Holder) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s lease %s", h.Kind, strings.TrimPrefix(h.Key, LockPrefix))
	if r := h.Record; r != nil {
		if r.Owner != "" {
			fmt.Fprintf(&b, " owner %q", r.Owner)
		}
		if r.Host != "" {
			fmt.Fprintf(&b, " on %s", r.Host)
		}
		if r.PID != 0 {
			fmt.Fprintf(&b, " pid %d", r.PID)
		}
	} else if h.BodyError != "" {
		fmt.Fprintf(&b, " (unreadable body: %s)", h.BodyError)
	}
	if h.Ahead > 0 {
		fmt.Fprintf(&b, ", refreshed %s ahead of the store clock (fresh until the clock passes it)", h.Ahead.Round(time.Second))
	} else {
		fmt.Fprintf(&b, ", refreshed %s ago (store clock)", h.Age.Round(time.Second))
	}
	if h.TTLCapped {
		fmt.Fprintf(&b, ", declares %s, judged with the maximum", h.Record.TTL)
	}
	if h.Stale {
		b.WriteString(", stale")
	}
	return b.String()
}

// LockedError: someone else holds the lock and Options.Wait ran out.
type LockedError struct {
	// Want is the kind of lease that could not be taken.
	Want    Kind
	Holders []Holder
}

func (e *LockedError) Error() string {
	parts := make([]string, len(e.Holders))
	for i, h := range e.Holders {
		parts[i] = h.String()
	}
	return fmt.Sprintf("cannot take the %s lease: held by %s", e.Want, strings.Join(parts, "; "))
}

// IsLocked reports whether err is (or wraps) a *LockedError.
func IsLocked(err error) bool {
	var le *LockedError
	return errors.As(err, &le)
}

// Lease is a held lease. Its methods are safe for concurrent use.
type Lease struct {
	st   storage.Store
	key  string
	kind Kind
	o    Options
	rec  Record
	body []byte
	log  *slog.Logger

	// mu serialises refreshes (background and Confirm) and release. It is
	// a channel, not a sync.Mutex, because refreshes sleep while holding it
	// and waiters must stay cancellable (and durably blocked under synctest).
	mu       chanMutex
	etag     string
	mtime    time.Time // store clock, of our latest version
	lastOK   time.Time // local wall clock when the latest successful write was sent
	released bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
}

// Key is the lease's object key.
func (l *Lease) Key() string { return l.key }

// Kind is what the lease is for.
func (l *Lease) Kind() Kind { return l.kind }

// Record is the lease's body.
func (l *Lease) Record() Record { return l.rec }

// Context is cancelled when the lease is lost (context.Cause wraps
// ErrLeaseLost), released, or when the context given to Acquire ends. Every
// mutating call made under the lease must use it.
func (l *Lease) Context() context.Context { return l.ctx }

// Err is nil while the lease is held, else why it is not.
func (l *Lease) Err() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

func wallNow() time.Time { return time.Now().Round(0) }

func newLease(parent context.Context, st storage.Store, key string, kind Kind, o Options, rec Record, body []byte, obj storage.Object, sent time.Time) *Lease {
	ctx, cancel := context.WithCancelCause(parent)
	l := &Lease{
		st: st, key: key, kind: kind, o: o, rec: rec, body: body,
		log:  o.Logger.With("lease", key),
		etag: obj.ETag, mtime: obj.ModTime, lastOK: sent,
		ctx: ctx, cancel: cancel, mu: make(chanMutex, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	return l
}

// start launches the background refresher.
func (l *Lease) start() { go l.refresher() }

func (l *Lease) lose(err error) {
	if l.ctx.Err() != nil {
		return
	}
	l.log.Error("lease lost; stopping work", "err", err)
	l.cancel(err)
}

// refresher refreshes every TTL/6 and cancels the lease when it could not
// refresh for TTL/2. A failed attempt is retried sooner (TTL/24).
func (l *Lease) refresher() {
	defer close(l.done)
	interval := RefreshInterval(l.o.TTL)
	retry := max(l.o.TTL/24, 10*time.Millisecond)
	next := interval
	for {
		l.mu.Lock()
		deadline := l.lastOK.Add(AbortAfter(l.o.TTL))
		l.mu.Unlock()
		untilDeadline := deadline.Sub(wallNow())
		timer := time.NewTimer(min(next, max(untilDeadline, 0)))
		select {
		case <-l.stop:
			timer.Stop()
			return
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		err := l.refresh(l.ctx)
		switch {
		case err == nil:
			next = interval
		case l.ctx.Err() != nil:
			return // released or the caller's context ended
		case errors.Is(err, ErrLeaseLost):
			l.lose(err)
			return
		default:
			if l.ctx.Err() != nil {
				return
			}
			l.log.Warn("lease refresh failed; retrying", "err", err)
			next = retry
		}
	}
}

// Confirm refreshes the lease by compare-and-swap now and returns nil only
// if the store accepted it while the lease was still fresh: the fencing
// check the pruner makes before every delete batch. Transient store errors
// are retried until the abort deadline; any final failure marks the lease
// lost and returns an error wrapping ErrLeaseLost.
func (l *Lease) Confirm(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	retry := max(l.o.TTL/60, 10*time.Millisecond)
	for {
		err := l.refresh(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrLeaseLost) {
			l.lose(err)
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: confirm interrupted: %w", ErrLeaseLost, err)
		}
		if !storage.IsTransient(err) {
			err = fmt.Errorf("%w: %w", ErrLeaseLost, err)
			l.lose(err)
			return err
		}
		if e := sleepCtx(ctx, jitter(retry)); e != nil {
			return fmt.Errorf("%w: confirm interrupted: %w", ErrLeaseLost, err)
		}
	}
}

// refresh makes one refresh attempt (with internal retries of ambiguous
// writes). It returns an error wrapping ErrLeaseLost when the lease is
// definitely not ours any more or its abort deadline has passed; other
// errors are transient failures the caller may retry.
func (l *Lease) refresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return fmt.Errorf("%w: released", ErrLeaseLost)
	}
	deadline := l.lastOK.Add(AbortAfter(l.o.TTL))
	if !wallNow().Before(deadline) {
		return fmt.Errorf("%w: not refreshed for %s (TTL/2)", ErrLeaseLost, AbortAfter(l.o.TTL))
	}
	// The write must land before the abort deadline, or not count.
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	sent := wallNow()
	ambiguous := false
	for attempt := 0; ; attempt++ {
		obj, err := l.st.Put(ctx, l.key, bytes.NewReader(l.body), storage.PutOptions{IfMatch: l.etag, ContentType: leaseContentType})
		if err == nil {
			return l.accept(obj, sent)
		}
		switch {
		case errors.Is(err, storage.ErrPreconditionFailed), errors.Is(err, storage.ErrNotFound):
			// Our ETag is not current. If the object still carries our
			// nonce, an earlier attempt of ours landed (its response was
			// lost): adopt that version.
			h, rerr := readHolder(ctx, l.st, l.key)
			if rerr != nil {
				if errors.Is(rerr, storage.ErrNotFound) {
					return fmt.Errorf("%w: %s was deleted (broken?)", ErrLeaseLost, l.key)
				}
				return fmt.Errorf("refresh %s: reading back after %v: %w", l.key, err, rerr)
			}
			if h.Record == nil || h.Record.Nonce != l.rec.Nonce {
				return fmt.Errorf("%w: %s was taken over by %s", ErrLeaseLost, l.key, h)
			}
			if ambiguous {
				return l.accept(storage.Object{Key: l.key, ETag: h.ETag, ModTime: h.ModTime}, sent)
			}
			// Ours but not from this call: adopt the ETag and write again.
			if attempt > 3 {
				return fmt.Errorf("refresh %s: ETag keeps changing", l.key)
			}
			l.etag, l.mtime = h.ETag, h.ModTime
		case storage.IsTransient(err) && ctx.Err() == nil:
			ambiguous = true
			if e := sleepCtx(ctx, jitter(max(l.o.TTL/120, 5*time.Millisecond))); e != nil {
				return fmt.Errorf("refresh %s: %w", l.key, err)
			}
		default:
			if ctx.Err() != nil && !wallNow().Before(deadline) {
				return fmt.Errorf("%w: refresh did not complete within TTL/2: %w", ErrLeaseLost, err)
			}
			return fmt.Errorf("refresh %s: %w", l.key, err)
		}
	}
}

// accept records a successful refresh, unless the store shows the lease had
// lapsed in between (a refresh may not resurrect an expired lease: others
// may already have acted on its staleness).
func (l *Lease) accept(obj storage.Object, sent time.Time) error {
	if !obj.ModTime.IsZero() && !l.mtime.IsZero() && obj.ModTime.Sub(l.mtime) > l.o.TTL {
		return fmt.Errorf("%w: lease lapsed (%s between refreshes on the store clock, TTL %s)", ErrLeaseLost, obj.ModTime.Sub(l.mtime), l.o.TTL)
	}
	l.etag, l.lastOK = obj.ETag, sent
	if !obj.ModTime.IsZero() {
		l.mtime = obj.ModTime
	}
	return nil
}

// Release stops refreshing and deletes the lease if it is still ours. It
// runs under a grace context detached from ctx's cancellation, so it still
// happens after SIGINT/SIGTERM cancelled the caller. Calling it twice is
// harmless.
func (l *Lease) Release(ctx context.Context) error {
	// Cancel first: a refresh in flight holding mu (possibly hanging until
	// the abort deadline) is aborted, so release after SIGTERM is prompt.
	l.cancel(errReleased)
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.o.ReleaseGrace)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	err := deleteOwn(ctx, l.st, l.key, l.etag, l.rec.Nonce, l.o)
	if err != nil {
		l.log.Warn("lease release failed; it will go stale", "err", err)
		return fmt.Errorf("release %s: %w", l.key, err)
	}
	l.log.Debug("lease released")
	return nil
}

var errReleased = errors.New("lease released")

// deleteOwn deletes key if it still carries nonce: conditional delete on
// etag; on 412 read back and retry with the current ETag if the object is
// still ours (an ambiguous refresh changed it); absent is success.
func deleteOwn(ctx context.Context, st storage.Store, key, etag, nonce string, o Options) error {
	for attempt := 0; ; attempt++ {
		err := st.Delete(ctx, key, storage.DeleteOptions{IfMatch: etag})
		switch {
		case err == nil, errors.Is(err, storage.ErrNotFound):
			return nil
		case errors.Is(err, storage.ErrPreconditionFailed):
			h, rerr := readHolder(ctx, st, key)
			if errors.Is(rerr, storage.ErrNotFound) {
				return nil
			}
			if rerr != nil {
				return rerr
			}
			if h.Record == nil || h.Record.Nonce != nonce {
				return nil // not ours any more: nothing to release
			}
			etag = h.ETag
		case storage.IsTransient(err) && ctx.Err() == nil && attempt < 20:
			if e := sleepCtx(ctx, jitter(min(o.Poll, time.Second))); e != nil {
				return err
			}
		default:
			return err
		}
		if attempt >= 20 {
			return fmt.Errorf("delete %s: gave up after %d attempts", key, attempt)
		}
	}
}

// readHolderRetry is readHolder with a few retries of transient errors.
func readHolderRetry(ctx context.Context, st storage.Store, key string) (Holder, error) {
	var h Holder
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		h, err = readHolder(ctx, st, key)
		if err == nil || !storage.IsTransient(err) || ctx.Err() != nil {
			return h, err
		}
		if e := sleepCtx(ctx, jitter(50*time.Millisecond<<attempt)); e != nil {
			break
		}
	}
	return h, err
}

// readHolder reads a lease object and its body. A body that cannot be parsed
// still yields a Holder (Record nil) so it keeps counting.
func readHolder(ctx context.Context, st storage.Store, key string) (Holder, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return Holder{}, err
	}
	defer r.Close()
	obj := r.Object()
	h := Holder{Key: key, Kind: kindOfKey(key), ModTime: obj.ModTime, ETag: obj.ETag}
	data, err := io.ReadAll(io.LimitReader(r, maxBody))
	if err != nil {
		if storage.IsTransient(err) || ctx.Err() != nil {
			return Holder{}, err
		}
		h.BodyError = err.Error()
		return h, nil
	}
	h.Record, h.BodyError = parseRecord(data)
	return h, nil
}

// parseRecord reads a lease body. A body that is not a record with a nonce
// yields no Record and says why: the lease still counts (fail closed).
func parseRecord(data []byte) (*Record, string) {
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, err.Error()
	}
	if rec.Nonce == "" {
		return nil, "no nonce"
	}
	return &rec, ""
}

func kindOfKey(key string) Kind {
	if key == PruneKey {
		return KindPrune
	}
	return KindWriter
}

// judge fills Age and Stale from the store's clock, with j's rule: the
// longer of the judge's TTL and the TTL the holder declared in its body (a
// holder refreshes on its own schedule, so a shorter TTL of the judge must
// never make it look stale early), but never more than MaxTTL.
func judge(h *Holder, now time.Time, j Judging) {
	j = j.withDefaults()
	ttl := j.TTL
	if h.Record != nil {
		if d, err := time.ParseDuration(h.Record.TTL); err == nil {
			ttl = max(ttl, d)
			h.TTLCapped = d > j.MaxTTL
		}
	}
	ttl = min(ttl, j.MaxTTL)
	h.Age = max(now.Sub(h.ModTime), 0)
	h.Ahead = max(h.ModTime.Sub(now), 0)
	h.Stale = h.Age > ttl
}
