package main

import (
	"io"
	"os"
	"sync"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/kiss-cache/kiss/gc"
)

// newProgress returns terminal progress bars (one per phase, counts and
// bytes) when w is a terminal, and a no-op otherwise (logs, CI, --json
// pipelines stay clean).
func newProgress(w io.Writer) gc.Progress {
	f, ok := w.(*os.File)
	if !ok || !(isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) {
		return gc.NoProgress{}
	}
	return &barProgress{w: w, bars: map[string]*phaseBar{}}
}

type phaseBar struct {
	bar   *progressbar.ProgressBar
	bytes int64
}

// barProgress draws a schollz/progressbar per phase. gc calls it from many
// goroutines; one mutex keeps the terminal output in order.
type barProgress struct {
	mu   sync.Mutex
	w    io.Writer
	bars map[string]*phaseBar
}

var phaseTitles = map[string]string{
	gc.PhaseList:    "listing store",
	gc.PhaseRoots:   "reading roots",
	gc.PhaseWalk:    "walking closures",
	gc.PhaseStat:    "checking ages",
	gc.PhaseMeta:    "checking metadata",
	gc.PhaseDelMeta: "deleting narinfo & co",
	gc.PhaseDelNAR:  "deleting NARs",
	gc.PhaseMemo:    "saving memo",
}

func (p *barProgress) Start(phase string, total, totalBytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	title := phaseTitles[phase]
	if title == "" {
		title = phase
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(title),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("obj"),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
	}
	if total < 0 {
		opts = append(opts, progressbar.OptionSpinnerType(14))
	}
	p.bars[phase] = &phaseBar{bar: progressbar.NewOptions64(total, opts...)}
}

func (p *barProgress) Advance(phase string, n, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.bars[phase]
	if b == nil {
		return
	}
	b.bytes += bytes
	if b.bytes > 0 {
		b.bar.Describe(phaseTitles[phase] + " (" + humanBytes(b.bytes) + ")")
	}
	_ = b.bar.Add64(n)
}

func (p *barProgress) Done(phase string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.bars[phase]; b != nil {
		_ = b.bar.Finish()
		delete(p.bars, phase)
	}
}
