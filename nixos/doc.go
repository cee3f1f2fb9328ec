// Package nixos holds no Go code: it is the home of kiss's NixOS modules
// (services.kiss.{prune,serve,publish,update}, Tor, the original
// kiss-cache's option names) and of their tests.
//
// nixpkgs itself is not available where the test suite runs, but nixpkgs'
// lib/ is (testenv.NixpkgsLib), so the modules are evaluated with the real
// module system against the NixOS options they touch, declared with
// NixOS's types in tests/nixos-options.nix; the units they produce are
// rendered as NixOS writes them and checked by systemd-analyze verify, run
// with the real kiss, and the nginx and Tor configurations are run in the
// real nginx and tor. The flake's outputs are evaluated with stand-in
// package sets. Building the package and the NixOS VM tests need nixpkgs
// (`nix flake check`); docs/nixos.md says what ran where.
package nixos
