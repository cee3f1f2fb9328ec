# Stand-ins for the few packages kiss's modules reference. Every package is a
# fixed fake store path; writeShellApplication keeps its script text so the
# tests can check it (bash -n, and by running it with fake tools on PATH).
let
  fake = name: {
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
in
{
  callPackage = _fn: _args: fake "kiss";
  writeShellApplication = { name, text, runtimeInputs ? [ ], ... }:
    fake name // {
      inherit text runtimeInputs;
      # What nixpkgs' writeShellApplication puts in $out/bin/<name>, minus
      # the PATH line (tests supply their own tools).
      script = "#!/usr/bin/env bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\n" + text;
    };
  nix = fake "nix";
  curl = fake "curl";
  coreutils = fake "coreutils";
  gnugrep = fake "gnugrep";
  systemd = fake "systemd";
  git = fake "git";
  kexec-tools = fake "kexec-tools";
}
