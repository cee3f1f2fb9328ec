package duration

import (
	"errors"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "10m": 10 * time.Minute, "1d12h": 36 * time.Hour,
		"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5h": 90 * time.Minute,
		"10m0s": 10 * time.Minute, "0": 0, " 2h ": 2 * time.Hour,
	} {
		if d, err := Parse(s); err != nil || d != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", s, d, err, want)
		}
	}
	for _, s := range []string{"600", "30", "1.5", "", "2x", "d", "-", "-1h", "+1h"} {
		if _, err := Parse(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want ErrSyntax", s, err)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 90 * time.Second, 36 * time.Hour, 30 * 24 * time.Hour} {
		if got, err := Parse(Format(d)); err != nil || got != d {
			t.Errorf("Parse(Format(%v)) = %v, %v", d, got, err)
		}
	}
}
