package gctune

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Policy is how much the heap may grow past its live size before the next
// collection: Percent of the live heap, but at least MinHeadroom bytes
// (never more than MaxPercent).
type Policy struct {
	Percent     int
	MinHeadroom uint64
	MaxPercent  int
}

// percent is the GOGC that gives live bytes the policy's headroom.
func (p Policy) percent(live uint64) int {
	if live == 0 {
		return p.MaxPercent
	}
	pct := p.MinHeadroom * 100 / live
	return int(max(uint64(p.Percent), min(pct, uint64(max(p.MaxPercent, p.Percent)))))
}

// poll is how often Start looks for a finished collection.
const poll = 10 * time.Millisecond

// Start applies p now and again after every collection, until stop is
// called (which leaves GOGC as it was set last).
func Start(p Policy) (stop func()) {
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}
	read := func() (cycles, live uint64) {
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 || samples[1].Value.Kind() != metrics.KindUint64 {
			return 0, 0 // not supported by this runtime: stay at MaxPercent's first setting
		}
		return samples[0].Value.Uint64(), samples[1].Value.Uint64()
	}
	cycles, live := read()
	current := p.percent(live)
	debug.SetGCPercent(current)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			c, l := read()
			if c == cycles {
				continue
			}
			cycles = c
			if pct := p.percent(l); pct != current {
				current = pct
				debug.SetGCPercent(pct)
			}
		}
	}()
	return func() { close(done) }
}
