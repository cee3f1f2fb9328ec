// Command kiss is a self-hosted Nix binary cache toolkit: a pruner, a root
// registry, a lock protocol over conditional writes and a gateway, over a
// flat directory (file://) or an S3 bucket (s3://).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"github.com/urfave/cli/v2"
)

// version is set by the build (-ldflags "-X main.version=…"); otherwise it is
// taken from the VCS stamp Go embeds in the binary.
var version = "dev"

func init() {
	if version != "dev" {
		return
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		version = v
		return
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			version = "dev-" + s.Value[:12]
		}
	}
}

// commands is filled by each cmd_<verb>.go file's init, so commands stay in
// their own files.
var commands []*cli.Command

func register(c *cli.Command) { commands = append(commands, c) }

func newApp(stdout, stderr io.Writer) *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	for _, c := range commands {
		quietUsage(c)
	}
	// -V, as the original kiss-cache (urfave's default is -v).
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Aliases: []string{"V"}, Usage: "print the version"}
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintf(c.App.Writer, "kiss %s\n", c.App.Version) }
	return &cli.App{
		Name:                 "kiss",
		Usage:                "a self-hosted Nix binary cache toolkit: prune, roots, locks, serve",
		Version:              version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"KISS_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "human, logfmt or json (auto: human on a terminal, logfmt otherwise)", EnvVars: []string{"KISS_LOG_FORMAT"}},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"},
		},
		Before: func(c *cli.Context) error {
			h, err := textHandler(stderr, c)
			if err != nil {
				return err
			}
			slog.SetDefault(slog.New(h))
			return nil
		},
		Commands:              commands,
		Action:                unknownCommand,
		OnUsageError:          onUsageError,
		ExitErrHandler:        func(*cli.Context, error) {}, // main maps errors to exit codes
		CustomAppHelpTemplate: cli.AppHelpTemplate + exitStatusHelp,
	}
}

// textHandler is the log handler every command logs through: lines to w at
// the level --log-level names, in the --log-format: on a terminal, short
// human lines (github.com/lmittmann/tint, coloured); otherwise logfmt
// (slog's text handler) or JSON, for journald and log shippers.
func textHandler(w io.Writer, c *cli.Context) (slog.Handler, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, usageError(fmt.Errorf("--log-level: %w", err))
	}
	tty := isTerminal(c.App.ErrWriter)
	format := c.String("log-format")
	if format == "auto" {
		format = "logfmt"
		if tty {
			format = "human"
		}
	}
	switch format {
	case "human":
		return tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: !tty}), nil
	case "logfmt":
		return slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}), nil
	case "json":
		return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}), nil
	}
	return nil, usageError(fmt.Errorf("--log-format %q: want auto, human, logfmt or json", format))
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdout, stderr)
	if len(args) == 0 || args[len(args)-1] != completionFlag { // the completion flag must stay last
		args = interspersed(app, args)
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	code := exitCodeOf(err)
	if ctx.Err() != nil && code == ExitFailure {
		code = ExitInterrupted
	}
	var silent *silentExit
	if !errors.As(err, &silent) {
		fmt.Fprintf(stderr, "kiss: %v\n", err)
		if code == ExitUsage {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", commandPath(app, args))
		}
	}
	return code
}

// unknownCommand is the action of kiss itself and of commands that only
// group subcommands: with no command named, or an unknown one, it is a
// usage error (exit 2), not the whole help on stdout.
func unknownCommand(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageError(errors.New("no command given"))
	}
	return usageError(fmt.Errorf("unknown command %q", c.Args().First()))
}

// onUsageError makes a flag parse error a usage error (exit 2, one line and
// a hint on stderr) instead of urfave's "Incorrect Usage" and the whole help
// on stdout (where --json consumers read).
func onUsageError(_ *cli.Context, err error, _ bool) error { return usageError(err) }

// quietUsage installs onUsageError (and, for a command grouping
// subcommands, unknownCommand) on c and its subcommands.
func quietUsage(c *cli.Command) {
	c.OnUsageError = onUsageError
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = unknownCommand
	}
	for _, s := range c.Subcommands {
		quietUsage(s)
	}
}

// commandPath is "kiss" and the commands named in args ("kiss roots add"),
// for the usage hint.
func commandPath(app *cli.App, args []string) string {
	path := []string{"kiss"}
	cmds := app.Commands
	for _, a := range args[1:] {
		if isFlag(a) {
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		path = append(path, c.Name)
		cmds = c.Subcommands
	}
	return strings.Join(path, " ")
}

// jsonWanted is true for the global --json and for a command's own --json
// (kiss prune --json STORE). c.Bool alone would stop at the first flag set
// that defines "json", missing the global flag when a command defines its own.
func jsonWanted(c *cli.Context) bool {
	for _, x := range c.Lineage() {
		if x.Bool("json") {
			return true
		}
	}
	return false
}
