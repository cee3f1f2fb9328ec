package main

import (
	"encoding/json"
	"io"
	"time"
)

// defaultLockWait is how long commands wait for a lease by default.
const defaultLockWait = 10 * time.Minute

// writeJSON prints v as indented JSON, the form every --json output takes.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return withExit(ExitFailure, err)
	}
	return nil
}
