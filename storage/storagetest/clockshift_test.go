package storagetest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// Through a proxy that shifts the store's clock, the real s3:// driver
// sees the shifted clock everywhere it reads one (Now from Date, ModTime
// from PUT's Date, HEAD's and GET's Last-Modified, ListObjectsV2's
// LastModified), while the real server behind it, on the real clock,
// accepts every request: the SDK corrects its signing clock to the store's
// after one RequestTimeTooSkewed, and the proxy re-signs.
func TestClockShiftReachesTheS3Driver(t *testing.T) {
	testenv.SkipShort(t, "versitygw")
	for _, by := range []time.Duration{3 * time.Hour, -3 * time.Hour} {
		t.Run(by.String(), func(t *testing.T) {
			ctx := context.Background()
			b := testenv.VersitygwBucket(t)
			p, u := storagetest.ProxyBucket(t, b.Server.Endpoint, b.URL, 1)
			p.ShiftClock(storagetest.ClockShift{By: by, AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey})
			st, err := storage.Open(ctx, u)
			if err != nil {
				t.Fatalf("open through the shifted proxy: %v", err)
			}
			defer st.Close()
			near := func(what string, got time.Time) {
				t.Helper()
				if d := got.Sub(time.Now().Add(by)); d < -time.Minute || d > time.Minute {
					t.Errorf("%s: %v is %v off the shifted clock (shift %v)", what, got, d.Round(time.Second), by)
				}
			}
			now, err := st.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			near("Now", now)
			obj, err := st.Put(ctx, "nar/a.nar", strings.NewReader("abc"), storage.PutOptions{IfNotExist: true})
			if err != nil {
				t.Fatalf("put through the shifted proxy: %v", err)
			}
			near("Put's ModTime", obj.ModTime)
			got, err := st.Stat(ctx, "nar/a.nar")
			if err != nil {
				t.Fatal(err)
			}
			near("Stat's ModTime", got.ModTime)
			r, err := st.Get(ctx, "nar/a.nar")
			if err != nil {
				t.Fatal(err)
			}
			near("Get's ModTime", r.Object().ModTime)
			r.Close()
			n := 0
			for o, err := range st.List(ctx, "") {
				if err != nil {
					t.Fatal(err)
				}
				near("List's ModTime of "+o.Key, o.ModTime)
				n++
			}
			if n != 1 {
				t.Errorf("listed %d objects, want 1", n)
			}
			// The real server saw the real time: the object is not shifted.
			direct, err := storage.Open(ctx, b.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close()
			raw, err := direct.Stat(ctx, "nar/a.nar")
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(raw.ModTime); d < -time.Minute || d > time.Minute {
				t.Errorf("the server's own mtime %v is %v off the real clock", raw.ModTime, d)
			}
			// The SDK's first request was signed on the host clock and
			// refused as skewed; it corrected and every later one passed.
			f := p.Faults()
			if f["request-time-too-skewed"] != 1 || f["clock-shift-refused"] != 0 {
				t.Errorf("want one RequestTimeTooSkewed (the first request), nothing refused otherwise: %v", f)
			}
		})
	}
}
