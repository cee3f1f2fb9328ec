// Package reports keeps run reports in the cache itself, so an operator's
// history needs no database and no server: each prune writes
// .kiss/reports/<time>.json, each kiss verify .kiss/reports/verify/<time>.json
// (nixcache.ReportKey), and kiss report reads them back to render its page.
// The pruner never collects them (they are under .kiss/); Trim bounds how
// many are kept.
package reports

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// MaxSize bounds a report read back (a prune report with many markers is a
// few hundred KiB).
const MaxSize = 64 << 20

// Entry is one stored report.
type Entry struct {
	Key  string
	Time time.Time
}

// Save writes v as JSON at the report key for time t under prefix
// (nixcache.ReportsPrefix or VerifyReportsPrefix), never replacing another.
func Save(ctx context.Context, st storage.Store, prefix string, t time.Time, v any) (string, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	key := nixcache.ReportKey(prefix, t)
	if _, err := st.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{IfNotExist: true, ContentType: "application/json"}); err != nil {
		return "", fmt.Errorf("saving report %s: %w", key, err)
	}
	return key, nil
}

// List returns the reports directly under prefix, oldest first.
func List(ctx context.Context, st storage.Store, prefix string) ([]Entry, error) {
	var out []Entry
	for o, err := range storage.ListKeys(ctx, st, prefix) {
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", prefix, err)
		}
		if t, ok := nixcache.ReportTime(prefix, o.Key); ok {
			out = append(out, Entry{Key: o.Key, Time: t})
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Load reads the report at key into v.
func Load(ctx context.Context, st storage.Store, key string, v any) error {
	r, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return err
	}
	if len(data) > MaxSize {
		return fmt.Errorf("%s: larger than %d bytes", key, MaxSize)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// Trim deletes all but the newest keep reports under prefix and returns how
// many it deleted.
func Trim(ctx context.Context, st storage.Store, prefix string, keep int) (int, error) {
	list, err := List(ctx, st, prefix)
	if err != nil || len(list) <= keep {
		return 0, err
	}
	var keys []string
	for _, e := range list[:len(list)-keep] {
		keys = append(keys, e.Key)
	}
	if err := st.DeleteMany(ctx, keys); err != nil {
		return 0, err
	}
	return len(keys), nil
}
