# Evaluates flake.nix's outputs against a fake nixpkgs (no nixpkgs here):
# checks the output names and extracts the check scripts so the Go tests
# can run them with the real nginx and openssl.
let
  flake = import ../../flake.nix;
  lib = import ./stub-lib.nix // { genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names); licenses.mit = "mit"; platforms.unix = [ ]; };
  fakePkgs = system: {
    inherit lib;
    callPackage = f: args: { type = "derivation"; name = "kiss"; outPath = "/nix/store/x-kiss"; };
    stdenv.hostPlatform = { inherit system; isLinux = true; };
    mkShell = a: { type = "derivation"; name = "shell"; };
    runCommand = n: _: s: { type = "derivation"; name = n; script = s; };
  } // builtins.listToAttrs (map (n: { name = n; value = "/nix/store/x-${n}"; }) [ "go_1_26" "gopls" "nix" "nginx" "openssl" "curl" "spin" "tflint" "opentofu" ]);
  nixpkgs = { lib = lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] fakePkgs; };
  self = flake.outputs { inherit self nixpkgs; };
in {
  packages = builtins.attrNames self.packages.x86_64-linux;
  modules = builtins.attrNames self.nixosModules;
  checks = builtins.attrNames self.checks.x86_64-linux;
  nginxScript = self.checks.x86_64-linux.nginx-config.script;
  stubEval = self.checks.x86_64-linux.nixos-stub-eval.script;
}
