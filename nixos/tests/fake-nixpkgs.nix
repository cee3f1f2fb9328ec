# A stand-in for the nixpkgs flake input: nixpkgs' real lib, and package
# sets made of ./stub-pkgs.nix plus the few builders flake.nix calls (a
# buildGoModule that keeps its arguments, runCommand that keeps its script,
# testers.runNixOSTest that keeps its test). Used by ./flake-eval.nix and,
# as the flake ./fake-nixpkgs-flake.nix, by `nix flake check` in the tests.
{ lib }:
let
  systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
  fakePkgs = system:
    let
      stub = import ./stub-pkgs.nix { inherit lib; };
      drv = name: extra: {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
        drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
      } // extra;
      self = stub // {
        inherit lib;
        stdenv.hostPlatform = { inherit system; isLinux = lib.hasSuffix "-linux" system; };
        # callPackage the real package.nix with a buildGoModule that keeps its arguments.
        callPackage = fn: args:
          let f = if builtins.isPath fn then import fn else fn; in
          f ({ inherit lib; buildGoModule = a: drv "${a.pname}-${a.version}" { args = a; meta = a.meta; }; } // args);
        mkShell = a: drv "shell" { packages = map (p: p.name) a.packages; };
        runCommand = name: _env: script: drv name { inherit script; };
        writeText = name: text: drv name { inherit text; };
        writeTextDir = path: text: drv (baseNameOf path) { inherit text; };
        testers.runNixOSTest = test: drv "vm-test-${test.name}" { inherit test; };
      } // lib.genAttrs [ "go_1_26" "gopls" "nix" "nginx" "openssl" "curl" "spin" "tor" "tflint" "opentofu" "nixfmt" "busybox" ] (n: drv n { });
    in
    self;
in
{
  inherit lib;
  legacyPackages = lib.genAttrs systems fakePkgs;
}
