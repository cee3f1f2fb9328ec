// Command gostatic is the benchmark's reference for Go's own HTTP floor: the
// standard library's http.FileServer on the cache directory, nothing else
// (no auth, no validation, no log, no metrics). kiss serve cannot be faster
// than this; the gap between it and nginx is net/http's, not kiss's.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	listen := flag.String("listen", "127.0.0.1:0", "address")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*listen, http.FileServer(http.Dir(*dir))))
}
