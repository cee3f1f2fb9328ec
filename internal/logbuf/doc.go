// Package logbuf buffers a log stream: records are written into memory and
// reach the underlying writer when the buffer fills, at a fixed interval,
// when a record of warning level or above arrives, and on Close.
//
// `kiss serve` writes one access-log line per request. Written directly,
// that is one write(2) per request, about as much CPU as the rest of a
// narinfo request on the gateway's side; buffered, a burst of requests
// costs one write. The price is that a line may reach the log up to one
// interval late (nginx's `access_log … buffer= flush=` makes the same
// trade). Warnings and errors are never delayed.
package logbuf
