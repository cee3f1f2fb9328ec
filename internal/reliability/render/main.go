// Command render writes docs/reliability.md from the results a run of the
// reliability suite recorded (scripts/reliability.sh runs it):
//
//	go run ./internal/reliability/render -dir RESULTS -commit SHA -command CMD > docs/reliability.md
//
// With -from docs/reliability.md it renders the results a document already
// holds again (after a change to the document's text, without a new run).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/kiss-cache/kiss/internal/reliability"
)

func main() {
	dir := flag.String("dir", "", "directory of recorded results (*.json)")
	commit := flag.String("commit", "", "commit the run tested")
	command := flag.String("command", "", "the command that made the run")
	from := flag.String("from", "", "re-render the results held by this document")
	flag.Parse()
	if *from != "" {
		old, err := os.ReadFile(*from)
		if err == nil {
			var run reliability.Run
			if run, err = reliability.Parse(old); err == nil {
				var doc []byte
				if doc, err = reliability.Render(run); err == nil {
					os.Stdout.Write(doc)
					return
				}
			}
		}
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	results, err := reliability.Load(*dir)
	if err == nil && len(results) == 0 {
		err = fmt.Errorf("no results in %q", *dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	doc, err := reliability.Render(reliability.Run{
		Commit:  *commit,
		Date:    time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Machine: fmt.Sprintf("%d cores (%s/%s)", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		Command: *command,
		Results: results,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	os.Stdout.Write(doc)
}
