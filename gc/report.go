package gc

import (
	"encoding/json"
	"time"

	"github.com/kiss-cache/kiss/roots"
)

// Duration marshals as a Go duration string ("2h0m0s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
func (d Duration) String() string               { return time.Duration(d).String() }

// UnmarshalJSON reads what MarshalJSON wrote (saved reports are read back).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Report is what a prune saw and did, for humans (summary), machines (--json)
// and Prometheus (metrics file). Counts are by object kind (nixcache.Kind).
type Report struct {
	Store       string    `json:"store"`
	DryRun      bool      `json:"dry_run"`
	Now         time.Time `json:"store_now,omitzero"` // unset when the run stopped before reading the store clock
	Grace       Duration  `json:"grace"`
	RootMaxAge  Duration  `json:"root_max_age"`
	Concurrency int       `json:"concurrency"`

	Roots struct {
		Markers int            `json:"markers"`
		Expired int            `json:"expired"`
		Paths   int            `json:"paths"`
		Missing int            `json:"missing"`
		Young   int            `json:"young_narinfos"`
		List    []roots.Marker `json:"list,omitempty"`
	} `json:"roots"`

	Listed map[string]Count `json:"listed"`
	// ListedBytesPartial: the store was listed by key alone (file://), so
	// listed and kept bytes count only objects whose size was read or
	// stat'ed (reachable narinfos, and everything deleted).
	ListedBytesPartial bool  `json:"listed_bytes_partial,omitempty"`
	Reachable          Count `json:"reachable"` // narinfos; bytes = sum of FileSize
	NarInfoReads       int64 `json:"narinfo_reads"`
	DanglingRefs       int64 `json:"dangling_references"`
	MissingNARs        int64 `json:"missing_nars"`
	// LateNARs: NARs of reachable narinfos that the listing did not name
	// but a stat found (written while the store was listed); kept.
	LateNARs int64 `json:"late_nars,omitempty"`
	Memo     struct {
		Loaded bool  `json:"loaded"`
		Hits   int64 `json:"hits"`
		Saved  bool  `json:"saved"`
		Bytes  int64 `json:"bytes,omitempty"`
	} `json:"memo"`

	Keep        map[string]Count `json:"keep"`
	Delete      map[string]Count `json:"delete"` // planned
	DeleteTotal Count            `json:"delete_total"`
	Deleted     Count            `json:"deleted"` // done (0 in a dry run)
	// DeletedUncertain: objects of a failed delete that a re-check could
	// not find out about; they may or may not be gone (see Plan.recheck).
	DeletedUncertain Count `json:"deleted_uncertain"`
	Batches          int   `json:"batches"`
	// Snapshot: the run listed below the top level from an S3 Inventory
	// report (Options.Snapshot).
	Snapshot *SnapshotReport `json:"inventory,omitempty"`

	Requests map[string]int64   `json:"requests,omitempty"` // storage requests by type (filled by the caller)
	Phases   map[string]float64 `json:"phase_seconds"`
	Elapsed  float64            `json:"elapsed_seconds"`
	Warnings []string           `json:"warnings,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// SnapshotReport says what a prune with a snapshot (an S3 Inventory report)
// found when it checked the snapshot against the store.
type SnapshotReport struct {
	Taken time.Time `json:"taken"`
	Age   Duration  `json:"age"`
	// Checked: objects the snapshot listed that were stat'ed right before
	// their delete; Recent of them were younger than the grace period now
	// (written again since the snapshot) and kept; Vanished were gone.
	Checked  int64 `json:"checked"`
	Recent   int64 `json:"recent_kept"`
	Vanished int64 `json:"vanished"`
	// NewNARs: NARs of reachable narinfos that the snapshot did not have
	// but the store does (uploaded since), found by a stat each.
	NewNARs int64 `json:"new_nars"`
}
