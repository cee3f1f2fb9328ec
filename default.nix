# For Nix users without flakes:
#   nix-build                                    # ./result/bin/kiss
#   nix-build -A kiss --arg pkgs 'import <nixpkgs> { }'
#   imports = [ (import "${kiss}" { }).nixosModule ];   # configuration.nix
# (or simply imports = [ "${kiss}/nixos" ]; with services.kiss.package set).
{ pkgs ? import <nixpkgs> { } }:
let
  kiss = pkgs.callPackage ./package.nix { };
in
{
  inherit kiss;
  # All modules (the original kiss-cache option names included), with this
  # package as services.kiss.package's default.
  nixosModule = { lib, ... }: {
    imports = [ ./nixos ];
    services.kiss.package = lib.mkDefault kiss;
  };
  overlay = final: _prev: { kiss = final.callPackage ./package.nix { }; };
}
