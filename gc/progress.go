package gc

// Phases reported to Progress, in order.
const (
	PhaseList    = "list"  // listing the store
	PhaseRoots   = "roots" // reading markers
	PhaseWalk    = "walk"  // closure walk
	PhaseStat    = "stat"  // ages of objects a keys-only listing left out (file://)
	PhaseMeta    = "meta"  // reading realisations, build traces, debuginfo
	PhaseDelMeta = "delete-meta"
	PhaseDelNAR  = "delete-nar"
	PhaseMemo    = "memo"
)

// PhaseDecide is the report's time for the decide pass, from the walk's end
// to the plan: the keep sets, the candidates' ages (stat), the content
// reads (meta, timed on its own too) and the narinfos. Progress never
// sees it.
const PhaseDecide = "decide"

// Progress receives per-phase counts and bytes. total < 0 means unknown.
// Calls come from several goroutines; implementations must be safe for
// concurrent use. Library code never prints: cmd/kiss draws bars from this.
type Progress interface {
	Start(phase string, total, totalBytes int64)
	Advance(phase string, n, bytes int64)
	Done(phase string)
}

// NoProgress discards progress.
type NoProgress struct{}

func (NoProgress) Start(string, int64, int64)   {}
func (NoProgress) Advance(string, int64, int64) {}
func (NoProgress) Done(string)                  {}
