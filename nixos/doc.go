// Package nixos holds no Go code: it is the home of kiss's NixOS modules
// (services.kiss.{prune,serve,publish,update}) and of their tests.
//
// nixpkgs is not available where the test suite runs, so the tests check
// what can be checked honestly without it: every .nix file parses; each
// module evaluates against a small stub of nixpkgs' lib and the generated
// systemd units, ExecStart lines and scripts are asserted; and the nginx
// configuration of the "nginx" serve backend, rendered by the pure-builtins
// nginx-render.nix exactly as the module renders it, is run in a real nginx
// and probed over mutual TLS. Real NixOS evaluation and VM tests run only on
// a machine with nixpkgs (see docs/nixos.md).
package nixos
