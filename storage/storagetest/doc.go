// Package storagetest is the conformance suite every storage driver runs:
// storagetest.Run(t, open) checks the guarantees the pruner and the lock
// protocol rely on — not-found mapping, exact listings, large streamed
// objects, and above all that conditional writes have exactly one winner
// under real concurrency — against mem://, file:// and a real S3 server.
//
// It exists because drivers lie in ways sequential tests never see
// (gocloud's fileblob IfNotExist had several winners in 172 of 200 races),
// so each driver's test file is a few lines that call Run.
package storagetest
