// Package testenv starts the real components the kiss tests run against —
// the kiss binary, a Nix 2.8 client in throw-away configuration directories,
// nginx, a private PKI and (versitygw.go) an S3 server — all on 127.0.0.1,
// all cleaned up with t.Cleanup and stopped by PID.
//
// Tests use real components rather than fakes because the bugs that matter
// for a binary cache (upload order, what Nix considers "already cached",
// signature checks, TLS client authentication) live in the interaction with
// them. A missing component skips the test locally, but fails it when CI or
// a KISS_REQUIRE_* variable is set, so CI never passes by skipping.
package testenv
