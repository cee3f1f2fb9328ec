package verify

import (
	"context"
	"fmt"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/reports"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

// KeepReports is how many verify reports the cache keeps (older ones are
// deleted when a new one is saved).
const KeepReports = 100

// RunOptions are kiss verify's: a check, what to do about it, and whether to
// keep its report in the cache.
type RunOptions struct {
	Options
	// Quarantine moves every narinfo whose NAR is missing to
	// nixcache.QuarantineKey, under a writer lease (Restore undoes it).
	Quarantine bool
	Lock       LockOptions
	// Save writes the report to .kiss/reports/verify/<time>.json (kiss
	// report shows the last one's problems). A failure to save is a warning.
	Save bool
}

// Run checks st (Check), quarantines what it should, and saves the report.
// The report carries the store requests the run made.
func Run(ctx context.Context, st storage.Store, o RunOptions) (*Report, error) {
	counted := storage.NewCounting(st)
	rep, err := Check(ctx, counted, o.Options)
	if err != nil {
		return nil, err
	}
	if o.Quarantine {
		var missing []nixcache.Hash
		for _, p := range rep.Problems {
			if _, h := nixcache.Classify(p.Key); p.Kind == MissingNAR {
				missing = append(missing, h)
			}
		}
		if len(missing) > 0 {
			storeDir, err := roots.StoreDir(ctx, counted)
			if err != nil {
				return rep, err
			}
			err = underWriterLease(ctx, counted, o.Lock, func(ctx context.Context) error {
				for _, h := range missing {
					moved, err := quarantine(ctx, counted, storeDir, h)
					if err != nil {
						return fmt.Errorf("quarantining %s: %w", nixcache.NarInfoKey(h), err)
					}
					if moved {
						rep.Quarantined = append(rep.Quarantined, nixcache.NarInfoKey(h))
						rep.InQuarantine++
					}
				}
				return nil
			})
			if err != nil {
				rep.Error = err.Error()
				rep.Requests = counted.Counts()
				return rep, err
			}
		}
	}
	rep.Requests = counted.Counts()
	if o.Save {
		if _, err := reports.Save(ctx, st, nixcache.VerifyReportsPrefix, rep.Now, rep); err != nil {
			rep.Warnings = append(rep.Warnings, err.Error())
		} else if _, err := reports.Trim(ctx, st, nixcache.VerifyReportsPrefix, KeepReports); err != nil {
			rep.Warnings = append(rep.Warnings, "trimming old reports: "+err.Error())
		}
	}
	return rep, nil
}
