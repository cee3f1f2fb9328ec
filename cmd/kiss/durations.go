package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kiss-cache/kiss/internal/duration"
	"github.com/urfave/cli/v2"
)

// The one duration syntax of every kiss flag lives in internal/duration
// (shared with kiss-lambda's event and documented for the NixOS module).
var (
	parseDuration     = duration.Parse
	formatDuration    = duration.Format
	errDurationSyntax = duration.ErrSyntax
)

// durationFlag is cli.DurationFlag in duration.Syntax (days and weeks too).
// c.Duration reads it as usual: its value prints as a Go duration.
type durationFlag struct{ cli.DurationFlag }

// durFlag makes a duration flag; its default is shown in duration.Syntax.
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

// durationVar is a flag.Value in duration.Syntax over a time.Duration.
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
