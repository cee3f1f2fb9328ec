package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
)

// TestProgressOneBarAtATime: a phase started inside another (the stats of a
// walk) takes the line; the outer spinner is not redrawn until it is done;
// no rate is shown before a phase has run a second; stat passes are named
// by purpose.
func TestProgressOneBarAtATime(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newBarProgress(&out)
	p.now = func() time.Time { return now }

	p.Start(gc.PhaseWalk, -1, -1)
	p.Advance(gc.PhaseWalk, 5000, 0)
	p.Start(gc.PhaseStat, 100, -1)
	mark := out.Len()
	p.Advance(gc.PhaseStat, 50, 0)
	p.Advance(gc.PhaseWalk, 10, 0) // the walk goes on underneath
	during := out.String()[mark:]
	if strings.Contains(during, "walking closures") {
		t.Errorf("the walk's spinner was redrawn over the stat bar: %q", during)
	}
	if strings.Contains(out.String(), "obj/s") {
		t.Errorf("a rate after no time at all: %q", out.String())
	}
	now = now.Add(2 * time.Second)
	p.Advance(gc.PhaseStat, 50, 0)
	p.Done(gc.PhaseStat)
	after := out.String()
	if !strings.Contains(after, "checking narinfo ages: 100 objects in 2s") {
		t.Errorf("no summary line for the stat pass: %q", after)
	}
	p.Done(gc.PhaseWalk)
	if !strings.Contains(out.String(), "walking closures: 5,010 objects") {
		t.Errorf("no summary line for the walk: %q", out.String())
	}
	p.Start(gc.PhaseStat, 10, -1)
	if !strings.Contains(out.String()[len(after):], "checking ages of deletable objects") {
		t.Errorf("a stat pass after the walk is not named for what it checks: %q", out.String()[len(after):])
	}
}
