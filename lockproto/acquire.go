package lockproto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// jobRE: a writer job name becomes part of a key; keep it boring.
var jobRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_+@=,-]{0,99}$`)

// SanitizeJob maps free text (a marker name, a CI job) to a valid job name:
// characters outside [A-Za-z0-9_+@=,-] become '-', length is capped at 100.
func SanitizeJob(s string) string {
	b := []byte(s)
	out := make([]byte, 0, len(b))
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '+', c == '@', c == '=', c == ',', c == '-':
			out = append(out, c)
		default:
			out = append(out, '-')
		}
		if len(out) == 100 {
			break
		}
	}
	if len(out) == 0 || out[0] == '-' || out[0] == '_' || out[0] == '+' || out[0] == '@' || out[0] == '=' || out[0] == ',' {
		out = append([]byte("job"), out...)
		if len(out) > 100 {
			out = out[:100]
		}
	}
	return string(out)
}

// pruneInProgress: a gateway refused a new writer lease because it saw a
// fresh prune lease (httpstore.RemoteError, tested without importing it).
func pruneInProgress(err error) bool {
	var p interface{ PruneInProgress() bool }
	return err != nil && errors.As(err, &p) && p.PruneInProgress()
}

func checkStore(st storage.Store) error {
	c := st.Capabilities()
	if !c.AtomicCreate || !c.CompareAndSwap {
		return fmt.Errorf("%s: %w", st.URL(), ErrUnsupportedStore)
	}
	return nil
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// pollDelay is how long to wait before polling again: about poll, but not
// past the deadline, so a wait ends when --lock-wait says (with one last
// try), not up to a poll interval later.
func pollDelay(poll time.Duration, deadline time.Time) time.Duration {
	return max(0, min(jitter(poll), deadline.Sub(wallNow())))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// storeNow asks the store for its clock, retrying transient errors briefly.
func storeNow(ctx context.Context, st storage.Store) (time.Time, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var now time.Time
		now, err = st.Now(ctx)
		if err == nil {
			return now, nil
		}
		if !storage.IsTransient(err) || ctx.Err() != nil {
			break
		}
		if e := sleepCtx(ctx, jitter(50*time.Millisecond<<attempt)); e != nil {
			break
		}
	}
	return time.Time{}, fmt.Errorf("store clock: %w", err)
}

// existsError: create-if-absent found someone else's object.
type existsError struct{ h Holder }

func (e *existsError) Error() string { return "exists: " + e.h.String() }

// create writes body at key if absent. A transient failure makes the write
// ambiguous (it may have landed); a later 412 is resolved by reading the
// nonce back: ours means we hold it. Returns *existsError when another owner
// holds key.
func create(ctx context.Context, st storage.Store, key string, body []byte, nonce string) (storage.Object, error) {
	for attempt := 0; ; attempt++ {
		obj, err := st.Put(ctx, key, bytes.NewReader(body), storage.PutOptions{IfNotExist: true, ContentType: leaseContentType})
		if err == nil {
			return obj, nil
		}
		switch {
		case errors.Is(err, storage.ErrPreconditionFailed):
			h, rerr := readHolder(ctx, st, key)
			if errors.Is(rerr, storage.ErrNotFound) {
				continue // released meanwhile: try again
			}
			if rerr != nil {
				return storage.Object{}, fmt.Errorf("create %s: reading back: %w", key, rerr)
			}
			if h.Record != nil && h.Record.Nonce == nonce {
				return storage.Object{Key: key, ETag: h.ETag, ModTime: h.ModTime}, nil
			}
			return storage.Object{}, &existsError{h}
		case pruneInProgress(err):
			return storage.Object{}, fmt.Errorf("create %s: %w", key, err)
		case storage.IsTransient(err) && ctx.Err() == nil && attempt < 10:
			if e := sleepCtx(ctx, jitter(50*time.Millisecond<<min(attempt, 5))); e != nil {
				return storage.Object{}, err
			}
		default:
			return storage.Object{}, fmt.Errorf("create %s: %w", key, err)
		}
	}
}

// AcquirePrune takes the exclusive prune lease: create gcroots/.lock/prune
// (or take over a stale one by compare-and-swap on its ETag), then wait
// until no fresh writer lease remains. New writers back off as soon as the
// prune lease exists, so the wait is bounded by the running uploads. When
// o.Wait runs out it returns a *LockedError naming the holders (and leaves
// no lease of its own behind). The caller must Release the lease.
func AcquirePrune(ctx context.Context, st storage.Store, o Options) (*Lease, error) {
	o = o.withDefaults()
	if err := checkStore(st); err != nil {
		return nil, err
	}
	if err := o.checkTTL(); err != nil {
		return nil, err
	}
	if o.Owner == "" {
		o.Owner = "prune"
	}
	rec := newRecord(KindPrune, "", o)
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	log := o.Logger.With("lease", PruneKey)
	deadline := wallNow().Add(o.Wait)
	var lease *Lease
	for lease == nil {
		sent := wallNow()
		obj, err := create(ctx, st, PruneKey, body, rec.Nonce)
		var ee *existsError
		switch {
		case err == nil:
			lease = newLease(ctx, st, PruneKey, KindPrune, o, rec, body, obj, sent)
		case errors.As(err, &ee):
			h := ee.h
			now, nerr := storeNow(ctx, st)
			if nerr != nil {
				return nil, nerr
			}
			judge(&h, now, o.judging())
			if h.Stale {
				log.Warn("taking over a stale prune lease", "holder", h.String())
				sent = wallNow()
				obj, terr := takeOver(ctx, st, h, body, rec.Nonce)
				if terr == nil {
					lease = newLease(ctx, st, PruneKey, KindPrune, o, rec, body, obj, sent)
					break
				}
				if !errors.As(terr, &ee) {
					return nil, terr
				}
				h = ee.h
				judge(&h, now, o.judging())
			}
			if !wallNow().Before(deadline) {
				return nil, &LockedError{Want: KindPrune, Holders: []Holder{h}}
			}
			log.Info("prune lease busy; waiting", "holder", h.String())
			if e := sleepCtx(ctx, pollDelay(o.Poll, deadline)); e != nil {
				return nil, e
			}
		default:
			return nil, err
		}
	}
	lease.start()
	log.Debug("prune lease created; waiting for writers", "etag", lease.etag)

	// Wait until every fresh writer lease is gone.
	for {
		writers, err := listHolders(lease.ctx, st, o.judging(), func(key string) bool { return key != PruneKey })
		if err == nil {
			var fresh []Holder
			for _, h := range writers {
				if !h.Stale {
					fresh = append(fresh, h)
				}
			}
			if len(fresh) == 0 {
				cleanStaleWriters(lease.ctx, st, writers, o)
				if err := lease.Err(); err != nil {
					_ = lease.Release(ctx) // best effort: it goes stale by itself
					return nil, fmt.Errorf("%w: %w", ErrLeaseLost, err)
				}
				log.Info("prune lease held", "ttl", o.TTL)
				return lease, nil
			}
			if !wallNow().Before(deadline) {
				_ = lease.Release(ctx) // best effort: it goes stale by itself
				return nil, &LockedError{Want: KindPrune, Holders: fresh}
			}
			log.Info("waiting for writers to finish", "writers", len(fresh))
		}
		if err != nil {
			if lerr := lease.Err(); lerr != nil {
				_ = lease.Release(ctx) // best effort: it goes stale by itself
				return nil, fmt.Errorf("%w: %w", ErrLeaseLost, lerr)
			}
			if !storage.IsTransient(err) || !wallNow().Before(deadline) {
				_ = lease.Release(ctx) // best effort: it goes stale by itself
				return nil, fmt.Errorf("listing writer leases: %w", err)
			}
		}
		if e := sleepCtx(lease.ctx, pollDelay(o.Poll, deadline)); e != nil {
			_ = lease.Release(ctx) // best effort: it goes stale by itself
			if lerr := lease.Err(); lerr != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("%w: %w", ErrLeaseLost, lerr)
			}
			return nil, e
		}
	}
}

// takeOver replaces a stale lease by compare-and-swap on the ETag it was
// judged stale at. A 412 means someone else changed it first: resolved by
// reading the nonce back (ours after an ambiguous retry, else theirs).
func takeOver(ctx context.Context, st storage.Store, stale Holder, body []byte, nonce string) (storage.Object, error) {
	for attempt := 0; ; attempt++ {
		obj, err := st.Put(ctx, stale.Key, bytes.NewReader(body), storage.PutOptions{IfMatch: stale.ETag, ContentType: leaseContentType})
		if err == nil {
			return obj, nil
		}
		switch {
		case errors.Is(err, storage.ErrPreconditionFailed), errors.Is(err, storage.ErrNotFound):
			h, rerr := readHolder(ctx, st, stale.Key)
			if errors.Is(rerr, storage.ErrNotFound) {
				// Released meanwhile: report as busy-with-nothing so the
				// caller retries create at once.
				return storage.Object{}, &existsError{Holder{Key: stale.Key, Kind: stale.Kind, BodyError: "released meanwhile"}}
			}
			if rerr != nil {
				return storage.Object{}, rerr
			}
			if h.Record != nil && h.Record.Nonce == nonce {
				return storage.Object{Key: stale.Key, ETag: h.ETag, ModTime: h.ModTime}, nil
			}
			return storage.Object{}, &existsError{h}
		case storage.IsTransient(err) && ctx.Err() == nil && attempt < 10:
			if e := sleepCtx(ctx, jitter(50*time.Millisecond<<min(attempt, 5))); e != nil {
				return storage.Object{}, err
			}
		default:
			return storage.Object{}, fmt.Errorf("take over %s: %w", stale.Key, err)
		}
	}
}

// cleanStaleWriters deletes writer leases stale for more than 2×TTL (their
// holders stopped at TTL/2 long ago), each conditionally on the ETag it was
// judged at. Best effort: failures only leave clutter.
func cleanStaleWriters(ctx context.Context, st storage.Store, writers []Holder, o Options) {
	for _, h := range writers {
		if h.Age > 2*o.TTL {
			if err := st.Delete(ctx, h.Key, storage.DeleteOptions{IfMatch: h.ETag}); err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrPreconditionFailed) {
				o.Logger.Debug("could not remove a stale writer lease", "key", h.Key, "err", err)
			} else if err == nil {
				o.Logger.Info("removed stale writer lease", "holder", h.String())
			}
		}
	}
}

// AcquireWriter takes a shared writer lease for job: create
// gcroots/.lock/<job>.<nonce>, then read the prune lease. If a fresh one
// exists, delete our lease, back off and retry until o.Wait runs out (then a
// *LockedError naming the pruner). Writers never block each other. The
// caller must Release the lease.
func AcquireWriter(ctx context.Context, st storage.Store, job string, o Options) (*Lease, error) {
	o = o.withDefaults()
	if err := checkStore(st); err != nil {
		return nil, err
	}
	if err := o.checkTTL(); err != nil {
		return nil, err
	}
	if !jobRE.MatchString(job) {
		return nil, fmt.Errorf("%w: %q (want [A-Za-z0-9][A-Za-z0-9_+@=,-]{0,99}; see SanitizeJob)", ErrInvalidJob, job)
	}
	if o.Owner == "" {
		o.Owner = job
	}
	rec := newRecord(KindWriter, job, o)
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	key := LockPrefix + job + "." + rec.Nonce[:16]
	log := o.Logger.With("lease", key)
	deadline := wallNow().Add(o.Wait)
	for {
		sent := wallNow()
		obj, err := create(ctx, st, key, body, rec.Nonce)
		if pruneInProgress(err) {
			// A gateway refused our lease because it saw a fresh prune
			// lease (503): the same answer as reading it ourselves.
			h, herr := readHolder(ctx, st, PruneKey)
			if herr != nil {
				h = Holder{Key: PruneKey, Kind: KindPrune, BodyError: "reported by the gateway: " + err.Error()}
			}
			if !wallNow().Before(deadline) {
				return nil, &LockedError{Want: KindWriter, Holders: []Holder{h}}
			}
			log.Info("cache is being pruned (gateway); waiting", "holder", h.String())
			if e := sleepCtx(ctx, pollDelay(o.Poll, deadline)); e != nil {
				return nil, e
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		// Read the prune lease only after our own lease exists (MUST W1).
		h, perr := readHolderRetry(ctx, st, PruneKey)
		switch {
		case errors.Is(perr, storage.ErrNotFound):
			lease := newLease(ctx, st, key, KindWriter, o, rec, body, obj, sent)
			lease.start()
			log.Debug("writer lease held")
			return lease, nil
		case perr != nil:
			_ = deleteOwn(context.WithoutCancel(ctx), st, key, obj.ETag, rec.Nonce, o)
			return nil, fmt.Errorf("reading the prune lease: %w", perr)
		}
		now, nerr := storeNow(ctx, st)
		if nerr != nil {
			_ = deleteOwn(context.WithoutCancel(ctx), st, key, obj.ETag, rec.Nonce, o)
			return nil, nerr
		}
		judge(&h, now, o.judging())
		if h.Stale {
			log.Warn("ignoring a stale prune lease", "holder", h.String())
			lease := newLease(ctx, st, key, KindWriter, o, rec, body, obj, sent)
			lease.start()
			return lease, nil
		}
		// A pruner is active: step aside so it can proceed.
		if err := deleteOwn(context.WithoutCancel(ctx), st, key, obj.ETag, rec.Nonce, o); err != nil {
			return nil, fmt.Errorf("withdrawing writer lease: %w", err)
		}
		if !wallNow().Before(deadline) {
			return nil, &LockedError{Want: KindWriter, Holders: []Holder{h}}
		}
		log.Info("cache is being pruned; waiting", "holder", h.String())
		if e := sleepCtx(ctx, pollDelay(o.Poll, deadline)); e != nil {
			return nil, e
		}
	}
}
