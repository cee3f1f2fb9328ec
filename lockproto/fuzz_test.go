package lockproto

import (
	"testing"
	"time"
)

// FuzzLeaseBody: whatever a lease body holds (written by any client, or
// damaged), reading it never panics, an unusable body still counts as a
// lease (fail closed), and judging stays within its bounds: a lease
// younger than the judge's own TTL is fresh whatever it declares (a body
// cannot make a live holder look stale early), and one older than MaxTTL
// is stale whatever it declares (a body cannot block others for longer).
func FuzzLeaseBody(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"kind":"writer","nonce":"0123456789abcdef0123456789abcdef","owner":"w","ttl":"30m0s","created":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"kind":"prune","nonce":"ab","ttl":"8760h0m0s"}`,
		`{"nonce":"x","ttl":"-5s"}`,
		`{"nonce":"x","ttl":"9223372036854775807ns"}`,
		`{"nonce":"","ttl":"1h"}`,
		`{"nonce":1}`,
		`null`, ``, `[]`, "\xff\xfe",
	} {
		f.Add([]byte(s), int64(30*time.Minute), int64(6*time.Hour), int64(time.Hour))
	}
	f.Fuzz(func(t *testing.T, body []byte, judgeTTL, maxTTL, age int64) {
		rec, bodyErr := parseRecord(body)
		if (rec == nil) == (bodyErr == "") {
			t.Fatalf("record %v with body error %q", rec, bodyErr)
		}
		if rec != nil && rec.Nonce == "" {
			t.Fatal("a record without a nonce")
		}
		j := Judging{TTL: time.Duration(judgeTTL), MaxTTL: time.Duration(maxTTL)}
		if j.TTL < MinTTL || j.MaxTTL < j.TTL || age < 0 {
			return // kiss never judges so (Acquire refuses TTL > MaxTTL)
		}
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		h := Holder{Key: LockPrefix + "w.0123456789abcdef", Record: rec, BodyError: bodyErr, ModTime: now.Add(-time.Duration(age))}
		judge(&h, now, j)
		switch {
		case time.Duration(age) <= j.TTL && h.Stale:
			t.Fatalf("a lease %v old is stale for a judge with TTL %v (body %q)", time.Duration(age), j.TTL, body)
		case time.Duration(age) > j.MaxTTL && !h.Stale:
			t.Fatalf("a lease %v old is fresh despite MaxTTL %v (body %q)", time.Duration(age), j.MaxTTL, body)
		}
	})
}
