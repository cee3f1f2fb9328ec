// Package result is the record of one vprune run: vprune writes it as a
// JSON line, report reads the lines back.
package result

// Run is one prune of the virtual store, measured.
type Run struct {
	Paths            int64              `json:"paths"`
	Mode             string             `json:"mode"`
	WallSeconds      float64            `json:"wall_seconds"`
	UserSeconds      float64            `json:"user_seconds"`
	SysSeconds       float64            `json:"sys_seconds"`
	PeakRSS          int64              `json:"peak_rss_bytes"`
	StartRSS         int64              `json:"start_rss_bytes"`
	Requests         map[string]int64   `json:"requests"`
	Phases           map[string]float64 `json:"phase_seconds"`
	Reachable        int64              `json:"reachable"`
	WantReach        int64              `json:"want_reachable,omitempty"`
	NarInfos         int64              `json:"narinfos,omitempty"`
	Objects          int64              `json:"objects,omitempty"`
	Reads            int64              `json:"narinfo_reads"`
	MemoHits         int64              `json:"memo_hits"`
	MemoLoaded       bool               `json:"memo_loaded"`
	DeleteTotal      int64              `json:"delete_total"`
	Deleted          int64              `json:"deleted"`
	Batches          int                `json:"batches"`
	MemoBytes        int64              `json:"memo_bytes"`
	Check            string             `json:"check,omitempty"`
	CheckOK          bool               `json:"check_ok"`
	Concurrency      int                `json:"concurrency"`
	PagesInFlight    int                `json:"pages_in_flight"`
	Inventory        bool               `json:"inventory,omitempty"`
	InventoryObjects int64              `json:"inventory_objects,omitempty"`
	Error            string             `json:"error,omitempty"`
	// Listed is the objects a "list" run listed.
	Listed int64 `json:"listed,omitempty"`
	// GOGC is the process's $GOGC when it overrides kiss prune's default.
	GOGC string `json:"gogc,omitempty"`
}
