package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/xhit/go-str2duration/v2"
)

// DurationSyntax is the one duration syntax of every kiss flag, the NixOS
// module and the docs: a number and a unit, units combined largest first.
// A bare number is refused rather than guessed (is --root-max-age 30 thirty
// seconds or thirty days?).
const DurationSyntax = "a number with a unit (ms, s, m, h, d, w), e.g. 90s, 10m, 2h, 1d12h, 30d, 2w"

var errDurationSyntax = errors.New("want " + DurationSyntax)

// parseDuration reads a duration in DurationSyntax (github.com/xhit/go-str2duration).
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t != "0" && strings.Trim(t, "0123456789.") == "" {
		return 0, fmt.Errorf("%q has no unit: %w", s, errDurationSyntax)
	}
	d, err := str2duration.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, errDurationSyntax)
	}
	return d, nil
}

// formatDuration writes d in DurationSyntax ("1d12h", "2h", "10m").
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return str2duration.String(d)
}

// durationFlag is cli.DurationFlag in DurationSyntax (days and weeks too).
// c.Duration reads it as usual: its value prints as a Go duration.
type durationFlag struct{ cli.DurationFlag }

// durFlag makes a duration flag; its default is shown in DurationSyntax.
func durFlag(f cli.DurationFlag) *durationFlag {
	switch {
	case f.DefaultText != "":
	case f.Value == 0:
		f.DefaultText = "off"
	default:
		f.DefaultText = formatDuration(f.Value)
	}
	return &durationFlag{f}
}

// durationVar is a flag.Value in DurationSyntax over a time.Duration.
type durationVar time.Duration

func (v *durationVar) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v = durationVar(d)
	return nil
}

func (v *durationVar) String() string { return time.Duration(*v).String() }

// Apply defines the flag with a fresh value per parse (flags defined once
// at init are parsed many times in tests).
func (f *durationFlag) Apply(set *flag.FlagSet) error {
	d := f.Value
	v := (*durationVar)(&d)
	for _, e := range f.EnvVars {
		if s, ok := os.LookupEnv(e); ok && strings.TrimSpace(s) != "" {
			if err := v.Set(s); err != nil {
				return fmt.Errorf("$%s for --%s: %w", e, f.Name, err)
			}
			f.HasBeenSet = true
			break
		}
	}
	for _, name := range f.Names() {
		set.Var(v, name, f.Usage)
	}
	return nil
}
