package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	p := Policy{Percent: 10, MinHeadroom: 16 << 20, MaxPercent: 100}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 << 20, 100},        // a small heap: capped
		{32 << 20, 50},        // 16 MiB of 32
		{64 << 20, 25},        // 16 MiB of 64
		{160 << 20, 10},       // the floor is reached
		{3 << 30, 10},         // a 10⁸-path plan: +10 %
		{(16 << 20) / 3, 100}, // above the cap
	} {
		if got := p.percent(c.live); got != c.want {
			t.Errorf("percent(%d) = %d, want %d", c.live, got, c.want)
		}
	}
}

// gogc reads GOGC (setting it back at once).
func gogc() int {
	v := debug.SetGCPercent(100)
	debug.SetGCPercent(v)
	return v
}

// TestStart: the policy applies at once, and after a collection it follows
// the live heap (a 64 MiB live slice gives 16 MiB of headroom at 25 %).
func TestStart(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	stop := Start(Policy{Percent: 10, MinHeadroom: 1 << 50, MaxPercent: 77})
	if got := gogc(); got != 77 {
		t.Fatalf("GOGC %d after Start, want 77", got)
	}
	stop()

	live := make([]byte, 64<<20)
	for i := range live {
		live[i] = byte(i)
	}
	stop = Start(Policy{Percent: 10, MinHeadroom: 16 << 20, MaxPercent: 100})
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		time.Sleep(3 * poll)
		got := gogc()
		if got >= 20 && got <= 25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d with %d MiB live, want about 25", got, len(live)>>20)
		}
	}
	runtime.KeepAlive(live)
}
