// Package duration is kiss's one duration syntax, shared by every command
// line (kiss, kiss-lambda's event), the NixOS module types and the docs: a
// number with a unit, units combined largest first, days and weeks
// included (github.com/xhit/go-str2duration does the parsing).
package duration

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/xhit/go-str2duration/v2"
)

// Syntax describes the accepted form, for error messages and help texts.
const Syntax = "a number with a unit (ms, s, m, h, d, w), e.g. 90s, 10m, 2h, 1d12h, 30d, 2w"

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("want " + Syntax)

// Parse reads s in Syntax. A bare number other than "0" is refused rather
// than guessed (is --root-max-age 30 thirty seconds or thirty days?), and so
// is a sign: no kiss duration is negative, and the NixOS module's type
// (nixos/lib.nix) takes exactly this syntax.
func Parse(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t != "0" && strings.Trim(t, "0123456789.") == "" {
		return 0, fmt.Errorf("%q has no unit: %w", s, ErrSyntax)
	}
	if strings.HasPrefix(t, "+") || strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("%q has a sign: %w", s, ErrSyntax)
	}
	d, err := str2duration.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, ErrSyntax)
	}
	return d, nil
}

// Format writes d in Syntax ("1d12h", "2h", "10m"; "0s" for zero).
func Format(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return str2duration.String(d)
}
