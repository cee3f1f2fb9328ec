# All kiss NixOS modules: services.kiss.{prune,serve,publish,update}.
# Non-flake use: imports = [ "${kiss}/nixos" ];
{
  imports = [
    ./common.nix
    ./prune.nix
    ./serve.nix
    ./publish.nix
    ./update.nix
  ];
}
