# Evaluates flake.nix's outputs without nixpkgs: `nixpkgs` is nixpkgs' real
# lib plus stand-in package sets (./stub-pkgs.nix and the few builders the
# flake calls), so what is checked is the flake's own logic — output names,
# the app's program, the overlay, the modules with the flake's package, the
# checks' scripts, the NixOS VM tests' node configurations (through the real
# module system, ./eval.nix) and test scripts — not nixpkgs. Building the
# package and running the VM tests need nixpkgs (`nix flake check`).
#   nix-instantiate --eval --strict --json flake-eval.nix --arg lib 'import …/lib'
{ lib }:
let
  flake = import ../../flake.nix;
  systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];

  nixpkgs = import ./fake-nixpkgs.nix { inherit lib; };
  fakePkgs = system: nixpkgs.legacyPackages.${system};
  self = flake.outputs { inherit self nixpkgs; };

  linux = "x86_64-linux";
  vm = lib.filterAttrs (n: _: lib.hasPrefix "vm-" n) self.checks.${linux};

  # A VM test node's configuration, evaluated with the harness: the node
  # module imports self.nixosModules.default itself.
  evalNode = node: import ./eval.nix { inherit lib; configuration = node; modules = [ ]; };
in
{
  packages = builtins.attrNames self.packages.${linux};
  package = { inherit (self.packages.${linux}.kiss.args) pname version vendorHash ldflags; };
  app = self.apps.${linux}.default;
  overlay = (self.overlays.default (fakePkgs linux) { }).kiss.name;
  modules = builtins.attrNames self.nixosModules;
  devShell = self.devShells.${linux}.default.packages;
  formatter = self.formatter.${linux}.name;
  checks = builtins.attrNames self.checks.${linux};
  darwinChecks = builtins.attrNames self.checks.x86_64-darwin;
  nginxScript = self.checks.${linux}.nginx-config.script;
  modulesEval = self.checks.${linux}.nixos-modules-eval.name;
  # Each module of nixosModules, imported alone with the flake's package.
  moduleAlone = lib.mapAttrs (_: m: (evalNode m).failedAssertions) self.nixosModules;
  # The root default.nix, for users without flakes.
  nonFlake = let d = import ../../default.nix { pkgs = fakePkgs linux; }; in {
    attrs = builtins.attrNames d;
    kiss = d.kiss.name;
    moduleAssertions = (evalNode d.nixosModule).failedAssertions;
    modulePackage = (evalNode d.nixosModule).config.kiss.package;
  };
  vmTests = lib.mapAttrs
    (_: c: {
      inherit (c.test) name testScript;
      nodes = lib.mapAttrs (_: n: let r = evalNode n; in {
        inherit (r) failedAssertions warnings;
        units = builtins.attrNames r.config.unitFiles;
        package = r.config.kiss.package;
      }) c.test.nodes;
    })
    vm;
}
