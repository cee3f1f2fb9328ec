package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/kiss-cache/kiss/gc"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// newProgress returns terminal progress bars when w is a terminal, and a
// no-op otherwise (logs, CI, --json pipelines stay clean).
func newProgress(w io.Writer) gc.Progress {
	if !isTerminal(w) {
		return gc.NoProgress{}
	}
	return newBarProgress(w)
}

// rateAfter is how long a phase runs before its rate is shown: a rate over
// the first milliseconds is noise ("866145062 obj/s").
const rateAfter = time.Second

var phaseTitles = map[string]string{
	gc.PhaseList:    "listing store",
	gc.PhaseRoots:   "reading roots",
	gc.PhaseWalk:    "walking closures",
	gc.PhaseMeta:    "checking metadata",
	gc.PhaseDelMeta: "deleting narinfo & co",
	gc.PhaseDelNAR:  "deleting NARs",
	gc.PhaseMemo:    "saving memo",
	"verify":        "checking narinfos",
}

// phaseState is one phase's counts; only the innermost running phase has
// a bar on the terminal.
type phaseState struct {
	name, title  string
	total, bytes int64
	n, doneBytes int64
	start        time.Time
	bar          *progressbar.ProgressBar
}

// barProgress draws one bar at a time: the innermost running phase (a
// phase started while another runs, like the stats of a walk, takes the
// line over and gives it back when done), and a summary line for each
// finished phase. gc calls it from many goroutines; one mutex keeps the
// terminal in order.
type barProgress struct {
	mu    sync.Mutex
	w     io.Writer
	stack []*phaseState
	now   func() time.Time
}

func newBarProgress(w io.Writer) *barProgress {
	return &barProgress{w: w, now: time.Now}
}

// title names a phase; the stat passes of a prune get their purpose from
// where they run (inside the walk: narinfo ages and memo checks; after it:
// the objects a plan would delete).
func (p *barProgress) title(phase string) string {
	if phase == gc.PhaseStat {
		for _, s := range p.stack {
			if s.name == gc.PhaseWalk {
				return "checking narinfo ages"
			}
		}
		return "checking ages of deletable objects"
	}
	if t := phaseTitles[phase]; t != "" {
		return t
	}
	return phase
}

func (p *barProgress) find(phase string) *phaseState {
	for i := len(p.stack) - 1; i >= 0; i-- {
		if p.stack[i].name == phase {
			return p.stack[i]
		}
	}
	return nil
}

func (p *barProgress) Start(phase string, total, totalBytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if top := p.top(); top != nil && top.bar != nil {
		_ = top.bar.Clear()
		top.bar = nil
	}
	s := &phaseState{name: phase, title: p.title(phase), total: total, bytes: totalBytes, start: p.now()}
	p.stack = append(p.stack, s)
	p.draw(s)
}

func (p *barProgress) top() *phaseState {
	if len(p.stack) == 0 {
		return nil
	}
	return p.stack[len(p.stack)-1]
}

// draw gives s the terminal line.
func (p *barProgress) draw(s *phaseState) {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.describe(s)),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
	}
	if s.total < 0 {
		// No background redraw (the library's spinner ticker): it kept
		// drawing a paused or finished spinner over the line.
		opts = append(opts, progressbar.OptionSpinnerType(14), progressbar.OptionSetSpinnerChangeInterval(0))
	}
	s.bar = progressbar.NewOptions64(s.total, opts...)
	_ = s.bar.Set64(s.n)
}

// describe is the bar's text: the title, the bytes done, and the rate once
// the phase has run long enough for it to mean something.
func (p *barProgress) describe(s *phaseState) string {
	var b strings.Builder
	b.WriteString(s.title)
	var extra []string
	if s.doneBytes > 0 {
		extra = append(extra, humanize.IBytes(uint64(s.doneBytes)))
	}
	if el := p.now().Sub(s.start); el >= rateAfter && s.n > 0 {
		extra = append(extra, humanize.SIWithDigits(float64(s.n)/el.Seconds(), 1, "")+" obj/s")
	}
	if len(extra) > 0 {
		b.WriteString(" (" + strings.Join(extra, ", ") + ")")
	}
	return b.String()
}

func (p *barProgress) Advance(phase string, n, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.find(phase)
	if s == nil {
		return
	}
	s.n += n
	s.doneBytes += bytes
	if s.bar != nil {
		s.bar.Describe(p.describe(s))
		_ = s.bar.Set64(s.n)
	}
}

func (p *barProgress) Done(phase string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.find(phase)
	if s == nil {
		return
	}
	if s.bar != nil {
		_ = s.bar.Finish()
		s.bar = nil
	}
	for i := range p.stack {
		if p.stack[i] == s {
			p.stack = append(p.stack[:i], p.stack[i+1:]...)
			break
		}
	}
	if s.n > 0 {
		line := fmt.Sprintf("%s: %s objects", s.title, humanize.Comma(s.n))
		if s.doneBytes > 0 {
			line += ", " + humanize.IBytes(uint64(s.doneBytes))
		}
		fmt.Fprintf(p.w, "\r\x1b[2K%s in %s\n", line, p.now().Sub(s.start).Round(10*time.Millisecond))
	}
	if top := p.top(); top != nil && top.bar == nil {
		p.draw(top)
	}
}
