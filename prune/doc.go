// Package prune runs one whole prune of a binary cache: take the exclusive
// prune lease, plan what is garbage, delete it under the lease, release the
// lease. It is the one prune every front end calls — `kiss prune` and the
// kiss-lambda handler (cmd/kiss-lambda) — so a scheduled prune in the cloud
// and one on a host decide and delete exactly alike.
//
// gc decides (roots, closures, plan, execute) and lockproto provides the
// lease; this package only puts them in order, counts the store requests
// and returns the report. It prints nothing and reads no environment: the
// caller turns the report and the error into output and an exit status.
package prune
