package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/publish"
	"github.com/kiss-cache/kiss/storage"
)

// Exit codes, documented in `kiss --help` and docs/cli.md. Scripts and
// systemd units decide on them, so they never change meaning.
const (
	ExitOK        = 0
	ExitFailure   = 1 // anything not listed below
	ExitUsage     = 2 // bad flags, arguments or URL
	ExitStore     = 3 // the store lacks a guarantee kiss needs, or cannot be reached
	ExitRefused   = 4 // fail-closed: kiss refused to delete (roots unreadable, malformed marker, empty roots, integrity)
	ExitLocked    = 5 // another holder has the lock and --lock-wait ran out
	ExitLeaseLost = 6 // the lease was lost while working; work stopped
	ExitTransient = 7 // could not decide: the store answered with transient errors only (retry later)
	ExitProblems  = 8 // kiss verify found something wrong with the cache
	// kiss with-lock: COMMAND could not be run (as env(1) and the shells).
	ExitCannotRun   = 126 // found but could not be executed (permissions, not a program)
	ExitNotFound    = 127 // not found
	ExitInterrupted = 130
)

const exitStatusHelp = `
EXIT STATUS:
   0    success
   1    failure
   2    usage error (flags, arguments, URL)
   3    store unusable (a guarantee kiss needs is missing, or unreachable)
   4    refused, fail-closed (nothing was deleted)
   5    locked by another holder (--lock-wait ran out)
   6    lease lost while working (work stopped)
   7    could not decide: the store kept answering with transient errors (storage check)
   8    problems found (kiss verify)
   130  interrupted
   kiss with-lock passes its COMMAND's exit status through
   (126: COMMAND cannot be executed, 127: COMMAND not found).
`

// exitError attaches an exit code to an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}
func usageError(err error) error { return withExit(ExitUsage, err) }

// silentExit exits with a code and prints nothing (the command already said why,
// or, for with-lock, the child's status is passed through).
type silentExit struct{ code int }

func (e *silentExit) Error() string { return "exit status" }
func (e *silentExit) ExitCode() int { return e.code }

func exitCodeOf(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	switch {
	case errors.Is(err, storage.ErrInvalidURL), errors.Is(err, storage.ErrInvalidKey):
		return ExitUsage
	}
	// urfave/cli reports flag parse errors as plain errors.
	msg := err.Error()
	for _, p := range []string{"flag provided but not defined", "invalid value", "Required flag", "Required flags"} {
		if strings.Contains(msg, p) {
			return ExitUsage
		}
	}
	return ExitFailure
}

// openError maps an error from opening a store to its exit code.
func openError(err error) error {
	if errors.Is(err, storage.ErrInvalidURL) {
		return usageError(err)
	}
	return withExit(ExitStore, err)
}

// publishError maps an error of publish.Root (kiss roots add, kiss
// with-lock) to its exit code; a command that failed passes its own status
// through, silently (it already said why).
func publishError(command string, err error) error {
	var failed *publish.CommandFailedError
	if errors.As(err, &failed) {
		return &silentExit{failed.Status}
	}
	err = fmt.Errorf("%s: %w", command, err)
	for _, m := range []struct {
		kind error
		code int
	}{
		{publish.ErrInvalid, ExitUsage},
		{publish.ErrLocked, ExitLocked},
		{publish.ErrLeaseLost, ExitLeaseLost},
		{publish.ErrInterrupted, ExitInterrupted},
		{publish.ErrStore, ExitStore},
	} {
		if errors.Is(err, m.kind) {
			return withExit(m.code, err)
		}
	}
	// publish.ErrCommand: the command's own code (with-lock: 126, 127 when
	// COMMAND could not be run), else a failure.
	var ee *exitError
	if errors.As(err, &ee) {
		return withExit(ee.code, err)
	}
	return withExit(ExitFailure, err)
}
