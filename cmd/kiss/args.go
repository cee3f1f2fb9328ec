package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves a command's flags in front of its positional arguments,
// so `kiss prune /var/lib/nix-cache --dry-run` works like
// `kiss prune --dry-run /var/lib/nix-cache`. urfave/cli v2 stops reading
// flags at the first positional argument, which surprises everyone who
// writes the STORE first (as the usage lines do). Nothing after "--" moves:
// that is `kiss with-lock`'s COMMAND.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	flags, cmds := app.Flags, app.Commands
	var leaf *cli.Command
	i := 1
	for i < len(args) { // global flags and the command path
		a := args[i]
		if a == "--" {
			return args
		}
		if isFlag(a) {
			var f []string
			f, i = flagAt(flags, args, i)
			out = append(out, f...)
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		out = append(out, a)
		i++
		leaf, flags, cmds = c, c.Flags, c.Subcommands
	}
	if leaf == nil || leaf.SkipFlagParsing { // with-lock parses its own
		return args
	}
	var fl, pos []string
	for i < len(args) {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if isFlag(a) {
			var f []string
			f, i = flagAt(flags, args, i)
			fl = append(fl, f...)
			continue
		}
		pos = append(pos, a)
		i++
	}
	out = append(out, fl...)
	return append(out, pos...)
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// flagAt returns the flag at args[i] with its value, if it takes one, and
// the index after them.
func flagAt(flags []cli.Flag, args []string, i int) ([]string, int) {
	if takesValue(flags, args[i]) && i+1 < len(args) {
		return args[i : i+2], i + 2
	}
	return args[i : i+1], i + 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		for _, n := range c.Names() {
			if n == name {
				return c
			}
		}
	}
	return nil
}

// takesValue reports whether flag token a (not of the form --name=value)
// consumes the next argument. Unknown flags are left for urfave to reject.
func takesValue(flags []cli.Flag, a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, ok := f.(*cli.BoolFlag); ok {
				return false
			}
			return true
		}
	}
	return false
}
