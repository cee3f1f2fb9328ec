package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// CheckStatus is the outcome of one probe.
type CheckStatus string

const (
	CheckOK      CheckStatus = "ok"
	CheckWarn    CheckStatus = "warn"
	CheckFail    CheckStatus = "fail"
	CheckSkipped CheckStatus = "skipped"
	// CheckUndecided: the probe could not tell, because the store kept
	// answering with transient errors (5xx, resets, timeouts) even after
	// retries. It says nothing about the guarantee itself.
	CheckUndecided CheckStatus = "undecided"
)

// Names of the guarantees Check probes.
const (
	GuaranteeReadAfterWrite    = "read-after-write"
	GuaranteeListAfterWrite    = "list-after-write"
	GuaranteeCreateIfAbsent    = "create-if-absent"
	GuaranteeCreateRace        = "create-race"
	GuaranteeIfMatch           = "if-match"
	GuaranteeConditionalDelete = "conditional-delete"
	GuaranteeClockSkew         = "clock-skew"
	GuaranteeCleanup           = "cleanup"
)

// maxUndecided is how many probes Check lets end undecided (transient
// errors through every retry) before it stops probing.
const maxUndecided = 2

// Clock-skew thresholds: kiss judges lease staleness and grace periods on
// the store's clock, but a host far off that clock misreads its own leases.
const (
	SkewWarn = time.Minute
	SkewFail = 5 * time.Minute
)

// CheckResult is one row of a CheckReport.
type CheckResult struct {
	Guarantee string      `json:"guarantee"`
	Status    CheckStatus `json:"status"`
	// Required: the lock protocol cannot run safely without it.
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
}

// CheckReport is what Check found.
type CheckReport struct {
	URL          string        `json:"url"`
	Capabilities Capabilities  `json:"capabilities"`
	Prefix       string        `json:"prefix"`
	Skew         time.Duration `json:"skew_ns"`
	Results      []CheckResult `json:"results"`
}

// Failed names the required guarantees that failed.
func (r CheckReport) Failed() []string {
	var out []string
	for _, c := range r.Results {
		if c.Required && c.Status == CheckFail {
			out = append(out, c.Guarantee)
		}
	}
	return out
}

// Undecided names the required guarantees that could not be decided
// because of transient errors.
func (r CheckReport) Undecided() []string {
	var out []string
	for _, c := range r.Results {
		if c.Required && c.Status == CheckUndecided {
			out = append(out, c.Guarantee)
		}
	}
	return out
}

// OK reports whether every required guarantee was shown to hold.
func (r CheckReport) OK() bool { return len(r.Failed()) == 0 && len(r.Undecided()) == 0 }

// CheckOptions tune Check.
type CheckOptions struct {
	// RaceWriters and RaceRounds size the concurrent create race (8 × 3).
	RaceWriters, RaceRounds int
	// Attempts bounds how often one store call is tried when it fails
	// transiently (default 3; the driver's own retries come on top), and
	// Backoff is the first pause between attempts, doubled each time
	// (default 200ms).
	Attempts int
	Backoff  time.Duration
	// Now is the local clock (time.Now when nil), for tests.
	Now func() time.Time
}

// Check probes st for the guarantees the lock protocol relies on, with
// objects under .kiss/check/<random>/ that it always removes. It does not
// trust Capabilities: a store that claims a guarantee is tested for it
// (S3-compatible servers differ in what they really honour). Store calls
// that fail transiently are retried; a probe that still cannot complete is
// CheckUndecided, never CheckFail: a flaky store has not shown that it
// lacks a guarantee.
func Check(ctx context.Context, st Store, o CheckOptions) (rep CheckReport) {
	if o.RaceWriters <= 0 {
		o.RaceWriters = 8
	}
	if o.RaceRounds <= 0 {
		o.RaceRounds = 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = 200 * time.Millisecond
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	c := &checker{st: st, o: o, nonce: hex.EncodeToString(nonce[:])}
	c.prefix = ".kiss/check/" + c.nonce + "/"
	rep = CheckReport{URL: st.URL(), Capabilities: st.Capabilities(), Prefix: c.prefix}
	add := func(g string, required bool, st CheckStatus, format string, a ...any) {
		rep.Results = append(rep.Results, CheckResult{Guarantee: g, Status: st, Required: required, Detail: fmt.Sprintf(format, a...)})
	}
	defer func() {
		// Cleanup runs on a fresh context so an interrupted check still tidies.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		n, err := c.cleanup(cctx)
		switch {
		case err != nil:
			add(GuaranteeCleanup, false, CheckWarn, "could not remove probe objects under %s: %v", c.prefix, err)
		default:
			add(GuaranteeCleanup, false, CheckOK, "removed %d probe objects", n)
		}
	}()

	// A store that keeps failing transiently is not probed on and on: after
	// maxUndecided probes were left undecided, the rest are too, unprobed.
	undecided := 0
	probe := func(g string, required bool, run func() (CheckStatus, string)) {
		if undecided >= maxUndecided {
			add(g, required, CheckUndecided, "not probed: the store kept failing transiently (above)")
			return
		}
		status, detail := run()
		if status == CheckUndecided {
			undecided++
		}
		add(g, required, status, "%s", detail)
	}
	probe(GuaranteeReadAfterWrite, true, func() (CheckStatus, string) { return c.readAfterWrite(ctx) })
	probe(GuaranteeListAfterWrite, true, func() (CheckStatus, string) { return c.listAfterWrite(ctx) })
	probe(GuaranteeCreateIfAbsent, true, func() (CheckStatus, string) { return c.createIfAbsent(ctx) })
	probe(GuaranteeCreateRace, true, func() (CheckStatus, string) { return c.createRace(ctx) })
	probe(GuaranteeIfMatch, true, func() (CheckStatus, string) { return c.ifMatch(ctx) })
	// Required only where the driver claims it.
	required := c.st.Capabilities().ConditionalDelete
	probe(GuaranteeConditionalDelete, required, func() (CheckStatus, string) {
		status, detail, req := c.conditionalDelete(ctx)
		required = req
		return status, detail
	})
	rep.Results[len(rep.Results)-1].Required = required
	probe(GuaranteeClockSkew, true, func() (status CheckStatus, detail string) {
		status, detail, rep.Skew = c.clockSkew(ctx)
		return status, detail
	})
	return rep
}

type checker struct {
	st     Store
	o      CheckOptions
	nonce  string
	prefix string

	mu      sync.Mutex
	written []string
}

func (c *checker) key(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.prefix + name
	c.written = append(c.written, k)
	return k
}

func (c *checker) body(what string) []byte {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return []byte(fmt.Sprintf(`{"kiss-check":%q,"probe":%q,"nonce":"%x"}`+"\n", c.nonce, what, b))
}

// retry runs call until it succeeds, fails for good, or Attempts attempts
// have failed transiently.
func (c *checker) retry(ctx context.Context, call func() error) error {
	var err error
	for attempt := range c.o.Attempts {
		if attempt > 0 {
			t := time.NewTimer(c.o.Backoff << (attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		if err = call(); !IsTransient(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// put writes body at key, retrying transient failures. A failed attempt
// may still have landed, so a later conditional attempt's 412 (or 404 for
// If-Match) is checked by reading the object back: if it holds our bytes
// (every probe body is unique), the write was ours.
func (c *checker) put(ctx context.Context, key string, body []byte, o PutOptions) (Object, error) {
	var obj Object
	ambiguous := false
	err := c.retry(ctx, func() error {
		var err error
		obj, err = c.st.Put(ctx, key, bytes.NewReader(body), o)
		if ambiguous && (errors.Is(err, ErrPreconditionFailed) || (o.IfMatch != "" && errors.Is(err, ErrNotFound))) {
			if got, cur, rerr := c.read(ctx, key); rerr == nil && bytes.Equal(got, body) {
				obj, err = cur, nil
			}
		}
		ambiguous = ambiguous || IsTransient(err)
		return err
	})
	return obj, err
}

func (c *checker) read(ctx context.Context, key string) ([]byte, Object, error) {
	var (
		b   []byte
		obj Object
	)
	err := c.retry(ctx, func() error {
		r, err := c.st.Get(ctx, key)
		if err != nil {
			return err
		}
		defer r.Close()
		b, err = io.ReadAll(io.LimitReader(r, 1<<20))
		obj = r.Object()
		return err
	})
	return b, obj, err
}

func (c *checker) stat(ctx context.Context, key string) (Object, error) {
	var obj Object
	err := c.retry(ctx, func() (err error) {
		obj, err = c.st.Stat(ctx, key)
		return err
	})
	return obj, err
}

// delete removes key, retrying transient failures. With IfMatch, a 404
// after a failed attempt means that attempt landed.
func (c *checker) delete(ctx context.Context, key string, o DeleteOptions) error {
	ambiguous := false
	return c.retry(ctx, func() error {
		err := c.st.Delete(ctx, key, o)
		if ambiguous && errors.Is(err, ErrNotFound) {
			return nil
		}
		ambiguous = ambiguous || IsTransient(err)
		return err
	})
}

// list returns every object under prefix, retrying the whole listing.
func (c *checker) list(ctx context.Context, prefix string) ([]Object, error) {
	var objs []Object
	err := c.retry(ctx, func() error {
		objs = objs[:0]
		for obj, err := range c.st.List(ctx, prefix) {
			if err != nil {
				return err
			}
			objs = append(objs, obj)
		}
		return nil
	})
	return objs, err
}

// failed turns the error that stopped a probe into its status: a store
// that still answers with transient errors leaves the guarantee undecided.
func failed(err error, format string, a ...any) (CheckStatus, string) {
	msg := fmt.Sprintf(format, a...)
	if IsTransient(err) {
		return CheckUndecided, "could not decide (transient errors): " + msg
	}
	return CheckFail, msg
}

func (c *checker) cleanup(ctx context.Context) (int, error) {
	c.mu.Lock()
	keys := append([]string(nil), c.written...)
	c.mu.Unlock()
	// Also anything else under the prefix (a store may have listed extra).
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	listed, _ := c.list(ctx, c.prefix)
	for _, obj := range listed {
		if !seen[obj.Key] {
			seen[obj.Key] = true
			keys = append(keys, obj.Key)
		}
	}
	if err := c.retry(ctx, func() error { return c.st.DeleteMany(ctx, keys) }); err != nil {
		return 0, err
	}
	left, err := c.list(ctx, c.prefix)
	if err != nil {
		return 0, err
	}
	if len(left) > 0 {
		return 0, fmt.Errorf("%s still present after delete", left[0].Key)
	}
	return len(keys), nil
}

func (c *checker) readAfterWrite(ctx context.Context) (CheckStatus, string) {
	k := c.key("raw")
	body := c.body("read-after-write")
	if _, err := c.put(ctx, k, body, PutOptions{}); err != nil {
		return failed(err, "put: %v", err)
	}
	got, _, err := c.read(ctx, k)
	if err != nil {
		return failed(err, "get right after put: %v", err)
	}
	if !bytes.Equal(got, body) {
		return CheckFail, fmt.Sprintf("get right after put returned %d bytes that differ from the %d written", len(got), len(body))
	}
	body2 := c.body("overwrite")
	if _, err := c.put(ctx, k, body2, PutOptions{}); err != nil {
		return failed(err, "overwrite: %v", err)
	}
	got, _, err = c.read(ctx, k)
	if err != nil {
		return failed(err, "get after overwrite: %v", err)
	}
	if !bytes.Equal(got, body2) {
		return CheckFail, "get after overwrite returned the old object"
	}
	if _, err := c.stat(ctx, c.prefix+"absent"); !errors.Is(err, ErrNotFound) {
		return failed(err, "stat of an absent key: got %v, want not found", err)
	}
	return CheckOK, "get returns what put wrote, at once (new and overwritten keys); absent keys are not found"
}

func (c *checker) listAfterWrite(ctx context.Context) (CheckStatus, string) {
	want := map[string]int64{}
	for i := range 3 {
		k := c.key(fmt.Sprintf("list/%d", i))
		b := c.body(k)
		if _, err := c.put(ctx, k, b, PutOptions{}); err != nil {
			return failed(err, "put: %v", err)
		}
		want[k] = int64(len(b))
	}
	listed, err := c.list(ctx, c.prefix+"list/")
	if err != nil {
		return failed(err, "list: %v", err)
	}
	got := map[string]int64{}
	for _, obj := range listed {
		if _, dup := got[obj.Key]; dup {
			return CheckFail, fmt.Sprintf("list returned %s twice", obj.Key)
		}
		got[obj.Key] = obj.Size
	}
	for k, n := range want {
		if got[k] != n {
			return CheckFail, fmt.Sprintf("list right after put: %s missing or wrong size (%d, want %d)", k, got[k], n)
		}
	}
	if len(got) != len(want) {
		return CheckFail, fmt.Sprintf("list returned %d objects, want %d", len(got), len(want))
	}
	k := c.prefix + "list/0"
	if err := c.delete(ctx, k, DeleteOptions{}); err != nil {
		return failed(err, "delete: %v", err)
	}
	listed, err = c.list(ctx, c.prefix+"list/")
	if err != nil {
		return failed(err, "list after delete: %v", err)
	}
	for _, obj := range listed {
		if obj.Key == k {
			return CheckFail, "list right after delete still shows the deleted object"
		}
	}
	return CheckOK, "new objects are listed at once, deleted ones disappear at once"
}

func (c *checker) createIfAbsent(ctx context.Context) (CheckStatus, string) {
	k := c.key("create")
	first := c.body("create-1")
	if _, err := c.put(ctx, k, first, PutOptions{IfNotExist: true}); err != nil {
		return failed(err, "create of a new key: %v", err)
	}
	_, err := c.put(ctx, k, c.body("create-2"), PutOptions{IfNotExist: true})
	if err == nil {
		return CheckFail, "a second create-if-absent on an existing key succeeded (the store ignores If-None-Match: *)"
	}
	if !errors.Is(err, ErrPreconditionFailed) {
		return failed(err, "second create-if-absent: got %v, want precondition failed (412)", err)
	}
	got, _, err := c.read(ctx, k)
	if err != nil {
		return failed(err, "reading back: %v", err)
	}
	if !bytes.Equal(got, first) {
		return CheckFail, "the refused create changed the existing object"
	}
	return CheckOK, "second create of the same key refused (412), first object intact"
}

func (c *checker) createRace(ctx context.Context) (CheckStatus, string) {
	for round := range c.o.RaceRounds {
		k := c.key(fmt.Sprintf("race-%d", round))
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
			bodies  = make([][]byte, c.o.RaceWriters)
			other   error
			start   = make(chan struct{})
		)
		for i := range c.o.RaceWriters {
			bodies[i] = c.body(fmt.Sprintf("race-%d-%d", round, i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// c.put retries 409 (a concurrent conditional request) as
				// it retries every transient error.
				_, err := c.put(ctx, k, bodies[i], PutOptions{IfNotExist: true})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, i)
				case errors.Is(err, ErrPreconditionFailed):
				default:
					other = err
				}
			}()
		}
		close(start)
		wg.Wait()
		if other != nil {
			return failed(other, "round %d: %v", round+1, other)
		}
		if len(winners) != 1 {
			return CheckFail, fmt.Sprintf("round %d: %d of %d concurrent creates succeeded, want exactly 1", round+1, len(winners), c.o.RaceWriters)
		}
		got, _, err := c.read(ctx, k)
		if err != nil {
			return failed(err, "round %d: reading the winner's object: %v", round+1, err)
		}
		if !bytes.Equal(got, bodies[winners[0]]) {
			return CheckFail, fmt.Sprintf("round %d: the stored object is not the winner's", round+1)
		}
	}
	return CheckOK, fmt.Sprintf("%d rounds × %d concurrent creates: exactly one winner each, its bytes intact", c.o.RaceRounds, c.o.RaceWriters)
}

func (c *checker) ifMatch(ctx context.Context) (CheckStatus, string) {
	k := c.key("cas")
	o1, err := c.put(ctx, k, c.body("cas-1"), PutOptions{})
	if err != nil {
		return failed(err, "put: %v", err)
	}
	b2 := c.body("cas-2")
	o2, err := c.put(ctx, k, b2, PutOptions{IfMatch: o1.ETag})
	if err != nil {
		return failed(err, "replace with the current ETag: %v", err)
	}
	if o2.ETag == o1.ETag {
		return CheckFail, fmt.Sprintf("ETag %s did not change when the content did", o1.ETag)
	}
	_, err = c.put(ctx, k, c.body("cas-3"), PutOptions{IfMatch: o1.ETag})
	if err == nil {
		return CheckFail, "replace with a stale ETag succeeded (the store ignores If-Match on PUT)"
	}
	if !errors.Is(err, ErrPreconditionFailed) {
		return failed(err, "replace with a stale ETag: got %v, want precondition failed (412)", err)
	}
	got, _, err := c.read(ctx, k)
	if err != nil {
		return failed(err, "reading back: %v", err)
	}
	if !bytes.Equal(got, b2) {
		return CheckFail, "the refused replace changed the object"
	}
	_, err = c.put(ctx, c.prefix+"cas-missing", c.body("cas-missing"), PutOptions{IfMatch: o2.ETag})
	c.key("cas-missing")
	if err == nil {
		return CheckFail, "If-Match on a missing key created it"
	}
	if IsTransient(err) {
		return failed(err, "If-Match on a missing key: %v", err)
	}
	if !errors.Is(err, ErrNotFound) {
		return CheckWarn, fmt.Sprintf("stale ETag refused (412), current accepted; but If-Match on a missing key gave %v instead of not found", err)
	}
	return CheckOK, "current ETag accepted, stale ETag refused (412), missing key not found"
}

// conditionalDelete probes the store itself, not a driver's emulation: on
// s3:// the DeleteObject request is sent raw with a stale If-Match.
func (c *checker) conditionalDelete(ctx context.Context) (CheckStatus, string, bool) {
	claimed := c.st.Capabilities().ConditionalDelete
	k := c.key("del")
	undecided := func(err error, format string, a ...any) (CheckStatus, string, bool) {
		st, d := failed(err, format, a...)
		return st, d, claimed
	}
	o1, err := c.put(ctx, k, c.body("del-1"), PutOptions{})
	if err != nil {
		return undecided(err, "put: %v", err)
	}
	o2, err := c.put(ctx, k, c.body("del-2"), PutOptions{})
	if err != nil {
		return undecided(err, "put: %v", err)
	}
	if o1.ETag == o2.ETag {
		return CheckFail, "ETag did not change on replace", claimed
	}
	s3st, raw := As[*s3Store](c.st)
	// Retrying a delete with a stale If-Match changes nothing a first
	// attempt did not: whether it landed shows in the Stat below.
	staleErr := c.retry(ctx, func() error {
		if raw {
			_, err := s3st.client.DeleteObject(ctx, &s3.DeleteObjectInput{
				Bucket: aws.String(s3st.name), Key: aws.String(k), IfMatch: aws.String(o1.ETag)})
			return mapS3Err(err)
		}
		return c.st.Delete(ctx, k, DeleteOptions{IfMatch: o1.ETag})
	})
	if IsTransient(staleErr) {
		return undecided(staleErr, "delete with a stale If-Match: %v", staleErr)
	}
	_, statErr := c.stat(ctx, k)
	if IsTransient(statErr) {
		return undecided(statErr, "stat after a delete with a stale If-Match: %v", statErr)
	}
	stillThere := statErr == nil
	honoured := errors.Is(staleErr, ErrPreconditionFailed) && stillThere
	if !honoured {
		why := fmt.Sprintf("a delete with a stale If-Match returned %v and the object is %s", errOK(staleErr), map[bool]string{true: "still there", false: "gone"}[stillThere])
		if !claimed {
			return CheckSkipped, "not claimed by the driver (read-compare-delete is used; small race window): " + why, false
		}
		hint := ""
		if raw {
			hint = "; open the store with ?conditional_delete=false (read-compare-delete)"
		}
		return CheckFail, "the store ignores If-Match on DELETE: " + why + hint, true
	}
	if err := c.delete(ctx, k, DeleteOptions{IfMatch: o2.ETag}); err != nil {
		return undecided(err, "delete with the current ETag: %v", err)
	}
	if _, err := c.stat(ctx, k); !errors.Is(err, ErrNotFound) {
		if IsTransient(err) {
			return undecided(err, "stat after delete: %v", err)
		}
		return CheckFail, "delete with the current ETag left the object", claimed
	}
	if !claimed {
		return CheckOK, "honoured by the store, but the driver does not claim it (read-compare-delete is used)", false
	}
	return CheckOK, "stale ETag refused (412), current ETag deletes", true
}

func errOK(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}

func (c *checker) clockSkew(ctx context.Context) (CheckStatus, string, time.Duration) {
	var before, after, now time.Time
	err := c.retry(ctx, func() (err error) {
		before = c.o.Now()
		now, err = c.st.Now(ctx)
		after = c.o.Now()
		return err
	})
	if err != nil {
		st, d := failed(err, "store clock: %v", err)
		return st, d, 0
	}
	local := before.Add(after.Sub(before) / 2)
	nowSkew := now.Sub(local)

	k := c.key("clock")
	before = c.o.Now()
	if _, err := c.put(ctx, k, c.body("clock"), PutOptions{}); err != nil {
		st, d := failed(err, "put: %v", err)
		return st, d, nowSkew
	}
	after = c.o.Now()
	obj, err := c.stat(ctx, k)
	if err != nil {
		st, d := failed(err, "stat: %v", err)
		return st, d, nowSkew
	}
	// ModTime may be truncated to the second: it is skewed only if it
	// falls outside [before-1s, after].
	var mtSkew time.Duration
	switch {
	case obj.ModTime.Before(before.Add(-time.Second)):
		mtSkew = obj.ModTime.Sub(before.Add(-time.Second))
	case obj.ModTime.After(after):
		mtSkew = obj.ModTime.Sub(after)
	}
	skew := nowSkew
	if abs(mtSkew) > abs(skew) {
		skew = mtSkew
	}
	detail := fmt.Sprintf("store clock %+.1fs, object mtime %+.1fs against this host", nowSkew.Seconds(), mtSkew.Seconds())
	switch {
	case abs(skew) > SkewFail:
		return CheckFail, detail + fmt.Sprintf(" (more than %v: leases and grace periods would be misjudged; fix NTP)", SkewFail), skew
	case abs(skew) > SkewWarn:
		return CheckWarn, detail + fmt.Sprintf(" (more than %v)", SkewWarn), skew
	}
	return CheckOK, detail, skew
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// String renders a report as an aligned table (the CLI's default output).
func (r CheckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store %s\n", r.URL)
	w := len("GUARANTEE")
	for _, c := range r.Results {
		w = max(w, len(c.Guarantee))
	}
	fmt.Fprintf(&b, "%-*s  %-9s  %s\n", w, "GUARANTEE", "RESULT", "DETAIL")
	for _, c := range r.Results {
		res := string(c.Status)
		if c.Status == CheckFail && !c.Required {
			res = "fail*"
		}
		fmt.Fprintf(&b, "%-*s  %-9s  %s\n", w, c.Guarantee, res, c.Detail)
	}
	return b.String()
}
