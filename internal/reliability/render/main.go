// Command render writes docs/reliability.md from the results a run of the
// reliability suite recorded (scripts/reliability.sh runs it):
//
//	go run ./internal/reliability/render -dir RESULTS -commit SHA -command CMD > docs/reliability.md
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
	flag.Parse()
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
