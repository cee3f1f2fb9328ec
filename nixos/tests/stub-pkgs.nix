# Stand-ins for the few nixpkgs packages kiss's modules reference (nixpkgs is
# not available where the test suite runs). Every package is a derivation-
# shaped attribute set (types.package accepts it) with a fixed fake store
# path; writeShellApplication keeps its script text so the tests can check
# it (bash -n, and by running it with fake tools on PATH). callPackage
# returns the fake kiss package, whatever it is given.
{ lib }:
let
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
    meta.mainProgram = name;
  };
  script = name: text: fake name // {
    inherit text;
    # What nixpkgs' writeShellApplication puts in $out/bin/<name>, minus
    # the PATH line and shellcheck (tests supply their own tools).
    script = "#!/usr/bin/env bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\n" + text;
  };
in
{
  stdenv.hostPlatform = { system = "x86_64-linux"; isLinux = true; };
  callPackage = _fn: _args: fake "kiss";
  writeShellApplication = { name, text, runtimeInputs ? [ ], ... }: script name text // { inherit runtimeInputs; };
  writeShellScriptBin = name: text: script name text;
  nix = fake "nix";
  curl = fake "curl";
  coreutils = fake "coreutils";
  gnugrep = fake "gnugrep";
  systemd = fake "systemd";
  git = fake "git";
  kexec-tools = fake "kexec-tools";
  tor = fake "tor";
  busybox = fake "busybox";
  openssl = fake "openssl";
}
